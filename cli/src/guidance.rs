//! `tfc guidance-eval`: how recognisable the samples of a class-conditional
//! Fashion-MNIST model are, by a classifier trained here, at several
//! guidance weights.

use anyhow::{ensure, Result};
use candle_core::Device;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use tfc_model::classifier::Classifier;
use tfc_model::data::{Dataset, FolderOptions};
use tfc_model::file::Model;
use tfc_model::sample::{denoise, sample, to_pixels, Guidance, SampleOptions};
use tfc_model::Labels;

#[derive(Args)]
pub struct GuidanceArgs {
    /// A class-conditional model file.
    #[arg(long)]
    model: PathBuf,
    /// Guidance weights to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,1,3")]
    cfg: Vec<f64>,
    /// Samples per class and weight.
    #[arg(short, default_value_t = 50)]
    n: usize,
    /// Classifier training epochs.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: &GuidanceArgs, quiet: bool) -> Result<()> {
    let dev = Device::Cpu;
    let model = Model::load(&a.model, &dev)?;
    let cfg = &model.config.arch;
    ensure!(cfg.classes > 0, "the model is unconditional");
    let opts = FolderOptions {
        channels: 1,
        downscale: 1,
        multiscale: false,
    };
    let train = Dataset::open("fashion-mnist:train", opts)?;
    let test = Dataset::open("fashion-mnist:test", opts)?;
    let clf = Classifier::train(&train, a.epochs, a.seed, &dev)?;
    println!(
        "classifier accuracy on the 10000 test images: {:.3}",
        clf.accuracy(&test, &dev)?
    );
    let sigma = model.config.noise.sigma();
    let mut header = String::from("| class |");
    let mut rule = String::from("|---|");
    for w in &a.cfg {
        header += &format!(" cfg {w} |");
        rule += "---|";
    }
    let mut acc = vec![vec![0f64; a.cfg.len()]; cfg.classes];
    let total = (a.cfg.len() * cfg.classes) as u64;
    let pb = crate::progress(
        total,
        quiet,
        "{elapsed_precise} [{bar:30}] {pos}/{len} class x weight",
    );
    let mut rates = Vec::new();
    for (wi, &w) in a.cfg.iter().enumerate() {
        let sopts = SampleOptions {
            temperature: 1.0,
            guidance: (w != 0.0).then_some(Guidance {
                weight: w,
                attn_temp: 1.0,
            }),
        };
        let start = Instant::now();
        for (k, row) in acc.iter_mut().enumerate() {
            let labels = vec![Some(k as u32); a.n];
            let mut x = sample(&model.flow, &labels, sopts, a.seed + k as u64, &dev)?;
            if let Some(s) = sigma {
                x = denoise(&model.flow, &x, Some(&Labels::new(&labels, &dev)?), s)?;
            }
            let pred = clf.predict(&to_pixels(&x)?, a.n, &dev)?;
            row[wi] = pred.iter().filter(|&&p| p == k as u32).count() as f64 / a.n as f64;
            pb.inc(1);
        }
        rates.push((cfg.classes * a.n) as f64 / start.elapsed().as_secs_f64());
    }
    pb.finish_and_clear();
    println!("{header}\n{rule}");
    for (k, row) in acc.iter().enumerate() {
        let name = model
            .config
            .class_names
            .get(k)
            .cloned()
            .unwrap_or(k.to_string());
        let cells: String = row.iter().map(|v| format!(" {v:.2} |")).collect();
        println!("| {name} |{cells}");
    }
    let means: String = (0..a.cfg.len())
        .map(|i| {
            format!(
                " **{:.3}** |",
                acc.iter().map(|r| r[i]).sum::<f64>() / cfg.classes as f64
            )
        })
        .collect();
    println!("| mean |{means}");
    let rates: String = rates.iter().map(|r| format!(" {r:.1} |")).collect();
    println!("| samples/s |{rates}");
    Ok(())
}
