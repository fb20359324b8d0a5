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
