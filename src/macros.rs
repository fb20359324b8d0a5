//! Macros the crate's modules share (declared first in `lib.rs`, so every module sees them).

/// Builder setters, each written `name(field: Type);` or `name(field: Type) => value;`: a method that takes
/// `self`, sets `field` to the argument (or to `value`, computed from it) and returns `self`. Doc comments go
/// before each setter.
macro_rules! setters {
    ($($(#[$attr:meta])* $name:ident($field:ident: $ty:ty) $(=> $value:expr)?;)+) => {
        $(
            $(#[$attr])*
            pub fn $name(mut self, $field: $ty) -> Self {
                self.$field = setters!(@value $field $(, $value)?);
                self
            }
        )+
    };
    (@value $field:ident) => {
        $field
    };
    (@value $field:ident, $value:expr) => {
        $value
    };
}

/// Declares an enum of names: each variant with the one name users write for it. Parsing ignores ASCII
/// case and a bad name is a one-line error naming the choices; `Display`, serde and (under the `cli`
/// feature) clap's `ValueEnum` all use the same names.
macro_rules! names {
    (
        $(#[$meta:meta])*
        pub enum $ty:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $name:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
        pub enum $ty {
            $( $(#[$vmeta])* #[cfg_attr(feature = "cli", value(name = $name))] $variant, )+
        }

        impl $ty {
            /// Every value, in the order the choices are listed.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name users write.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::Error;
            fn from_str(s: &str) -> $crate::Result<Self> {
                $crate::macros::parse_name(s, $what, Self::ALL, Self::name).map_err($crate::Error::invalid)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(deserializer)?;
                $crate::macros::parse_name(&text, $what, Self::ALL, Self::name)
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The value of `all` whose name is `text` (ignoring ASCII case), or a message naming `what` and the
/// choices (an [`crate::Error::InvalidArgument`] from `FromStr`, serde's own error in a file).
pub(crate) fn parse_name<T: Copy>(
    text: &str,
    what: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> std::result::Result<T, String> {
    if let Some(&value) = all.iter().find(|&&v| name(v).eq_ignore_ascii_case(text)) {
        return Ok(value);
    }
    let names: Vec<&str> = all.iter().map(|&v| name(v)).collect();
    let choices = match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(format!("{what} '{text}': expected {choices}"))
}
