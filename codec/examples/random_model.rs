//! Writes a random-weight model file, for speed measurements and scripts:
//! `cargo run --release -p tfc-codec --example random_model -- OUT CHANNELS [SEED]`.
//! The architecture is the photo preset (width 128, 4 blocks of 2 layers,
//! patch 4, tile 32; about 1.6M parameters).

use tfc_codec::config::FlowConfig;
use tfc_codec::model_file::random_model_bytes;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: random_model OUT CHANNELS [SEED]");
        std::process::exit(2);
    }
    let channels: usize = args[2].parse().expect("CHANNELS is 1 or 3");
    let seed: u64 = args
        .get(3)
        .map_or(1, |s| s.parse().expect("SEED is a number"));
    let cfg = FlowConfig::photo(channels);
    std::fs::write(&args[1], random_model_bytes(&cfg, seed, 0.02)).expect("writing the model");
    eprintln!("{} parameters", cfg.parameter_count());
}
