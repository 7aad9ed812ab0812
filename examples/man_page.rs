//! Writes hayate's man page, hayate(1), from the same clap definitions `hayate --help` prints, so
//! the two never disagree. The Debian package ships it (`contrib/deb/build.sh` runs this).
//!
//! `cargo run --example man_page > hayate.1 && man ./hayate.1`

use clap::CommandFactory;

fn main() -> std::io::Result<()> {
    let command = hayate_tracker::cli::Args::command();
    let man = clap_mangen::Man::new(command)
        .section("1")
        .manual("hayate manual")
        .source(concat!("hayate ", env!("CARGO_PKG_VERSION")));
    man.render(&mut std::io::stdout().lock())
}
