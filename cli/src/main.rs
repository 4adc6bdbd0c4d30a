//! `tfc`: a lossless image codec that is also a generative model.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bpd;
mod builtin;
mod codec_cmd;
mod guidance;
mod plot;
mod sample;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tfc",
    version,
    about = "Lossless image codec and generative model on a TarFlow"
)]
struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compress images losslessly.
    Compress(codec_cmd::CompressArgs),
    /// Decompress a .tfc file.
    Decompress(codec_cmd::DecompressArgs),
    /// Describe what a .tfc file holds.
    Info(codec_cmd::InfoArgs),
    /// Train a model.
    Train(Box<train::TrainArgs>),
    /// Bits per dimension of a model on images.
    Bpd(bpd::BpdArgs),
    /// Generate images.
    Sample(sample::SampleArgs),
    /// Measure class-conditional guidance with a classifier trained here.
    GuidanceEval(guidance::GuidanceArgs),
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Sets the thread count for rayon and candle's matmuls before either
/// starts a pool.
fn init_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1");
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let result = init_threads(cli.threads).and_then(|_| match &cli.command {
        Command::Compress(a) => codec_cmd::compress(a),
        Command::Decompress(a) => codec_cmd::decompress(a),
        Command::Info(a) => codec_cmd::info(a),
        Command::Train(a) => train::run(a, cli.quiet),
        Command::Bpd(a) => bpd::run(a, cli.quiet),
        Command::Sample(a) => sample::run(a, cli.quiet),
        Command::GuidanceEval(a) => guidance::run(a, cli.quiet),
    });
    if let Err(e) = result {
        eprintln!("tfc: error: {e:#}");
        std::process::exit(1);
    }
}

/// A progress bar on stderr, hidden when quiet.
pub fn progress(len: u64, quiet: bool, template: &str) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style.progress_chars("=> "));
    pb
}
