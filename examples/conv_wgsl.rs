//! Prints the generated WGSL of one convolution variant, or lists the variants any adapter can get.
//!
//! `cargo run --release --example conv_wgsl` lists the ids;
//! `cargo run --release --example conv_wgsl -- conv-wg-c4x16-r4x16x1` prints that variant's module.

use calibseg::ops::conv::selectable_tiles;

fn main() {
    let variants = selectable_tiles();
    let Some(id) = std::env::args().nth(1) else {
        println!("variants (pass one to print its WGSL):");
        for t in &variants {
            println!("  {}", t.id());
        }
        return;
    };
    match variants.iter().find(|t| t.id() == id) {
        Some(t) => print!("{}", t.source()),
        None => {
            eprintln!("no variant {id:?}; run without an argument for the list");
            std::process::exit(2);
        }
    }
}
