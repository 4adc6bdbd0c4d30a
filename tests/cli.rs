//! The `tfc` command line end to end: training a few steps, resuming,
//! measuring BPD, sampling, and refusing bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tfc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tfc"))
        .args(args)
        .arg("-q")
        .output()
        .expect("run tfc")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tfc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

fn photos(dir: &Path) {
    for i in 0..3u32 {
        let img = image::RgbImage::from_fn(40, 36, |x, y| {
            image::Rgb([(x * 5 + i * 40) as u8, (y * 6) as u8, ((x + y) * 3) as u8])
        });
        img.save(dir.join(format!("p{i}.png"))).unwrap();
    }
}

#[test]
fn train_resume_bpd_and_sample_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    photos(&data);
    let model = dir.path().join("m.safetensors");
    let (d, m) = (data.to_str().unwrap(), model.to_str().unwrap());
    let base = [
        "train",
        "--preset",
        "tiny-rgb",
        "--data",
        d,
        "--val",
        d,
        "--downscale",
        "1",
        "--out",
        m,
        "--val-every",
        "2",
        "--batch",
        "4",
    ];
    ok(&tfc(&[&base[..], &["--steps", "3"]].concat()));
    assert!(model.exists());
    for ext in [".ckpt", ".log.csv", ".curve.png"] {
        assert!(Path::new(&format!("{m}{ext}")).exists(), "{ext}");
    }
    // Starting again over an existing run is refused; resuming continues.
    let again = tfc(&[&base[..], &["--steps", "3"]].concat());
    assert!(!again.status.success());
    ok(&tfc(&[&base[..], &["--steps", "5", "--resume"]].concat()));
    let csv = std::fs::read_to_string(format!("{m}.log.csv")).unwrap();
    let steps: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["1", "2", "3", "4", "5"]);

    let json = ok(&tfc(&["bpd", "--model", m, "--data", d, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let bpd = v["bpd"].as_f64().unwrap();
    assert!(bpd.is_finite() && bpd > 0.0 && bpd < 16.0, "bpd {bpd}");
    // 3 images of 40x36 hold 2x2 tiles of 16x16 each.
    assert_eq!(v["tiles"].as_u64(), Some(12));

    let grid = dir.path().join("grid.png");
    let g_path = grid.to_str().unwrap();
    let sample = [
        "sample", "--model", m, "-n", "4", "--seed", "3", "-f", "-o", g_path,
    ];
    ok(&tfc(&sample));
    let g = image::open(&grid).unwrap();
    assert_eq!((g.width(), g.height()), (36, 36));
    let first = std::fs::read(&grid).unwrap();
    ok(&tfc(&sample));
    assert_eq!(
        first,
        std::fs::read(&grid).unwrap(),
        "same seed, same pixels"
    );

    // A resumed run may grow the model (more blocks and layers), not
    // reshape it; the grown model codes images losslessly.
    let reshape = tfc(&[&base[..], &["--steps", "6", "--resume", "--hidden", "16"]].concat());
    assert!(!reshape.status.success());
    let err = String::from_utf8_lossy(&reshape.stderr);
    assert!(err.contains("--hidden cannot change"), "{err}");
    let grow = ["--steps", "7", "--resume", "--blocks", "3", "--layers", "2"];
    ok(&tfc(&[&base[..], &grow[..]].concat()));
    let grown = tfc_model::file::Model::load(&model, &candle_core::Device::Cpu).unwrap();
    assert_eq!((grown.config.arch.blocks, grown.config.arch.layers), (3, 2));

    // A resume with no steps left rewrites the checkpoint, here compactly,
    // and leaves the model as it was; training goes on from the compact one.
    let ckpt = PathBuf::from(format!("{m}.ckpt"));
    let (exact_len, exported) = (file_len(&ckpt), std::fs::read(&model).unwrap());
    let bad = tfc(&[
        &base[..],
        &["--steps", "7", "--resume", "--checkpoint", "f8"],
    ]
    .concat());
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--checkpoint must be"));
    ok(&tfc(&[
        &base[..],
        &["--steps", "7", "--resume", "--checkpoint", "compact"],
    ]
    .concat()));
    let ratio = file_len(&ckpt) as f64 / exact_len as f64;
    assert!(
        (0.6..0.7).contains(&ratio),
        "compact / exact checkpoint {ratio}"
    );
    assert!(
        std::fs::read(&model).unwrap() == exported,
        "the model file changed"
    );
    ok(&tfc(&[&base[..], &["--steps", "8", "--resume"]].concat()));
    assert!(file_len(&ckpt) < exact_len, "the run stays compact");
    let src = data.join("p1.png");
    let (coded, back) = (dir.path().join("p1.tfc"), dir.path().join("p1.png"));
    let (c, b) = (coded.to_str().unwrap(), back.to_str().unwrap());
    ok(&tfc(&[
        "compress",
        src.to_str().unwrap(),
        "--model",
        m,
        "-o",
        c,
    ]));
    ok(&tfc(&["decompress", c, "--model", m, "-o", b]));
    assert_eq!(
        image::open(&src).unwrap().to_rgb8().into_raw(),
        image::open(&back).unwrap().to_rgb8().into_raw()
    );
}

#[test]
fn damaged_model_file_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}").unwrap();
    let out = tfc(&[
        "bpd",
        "--model",
        bad.to_str().unwrap(),
        "--data",
        "fashion-mnist:test",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid model file"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let grid = dir.path().join("g.png");
    let out = tfc(&[
        "sample",
        "--model",
        bad.to_str().unwrap(),
        "-o",
        grid.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(!grid.exists(), "no output on failure");
}

#[test]
fn built_in_model_round_trip_and_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/kodim23-crop.ppm");
    let coded = dir.path().join("k.tfc");
    let back = dir.path().join("k.ppm");
    let (c, b) = (coded.to_str().unwrap(), back.to_str().unwrap());
    ok(&tfc(&["compress", sample, "-o", c]));
    ok(&tfc(&["decompress", c, "-o", b]));
    assert_eq!(
        std::fs::read(sample).unwrap(),
        std::fs::read(&back).unwrap()
    );
    // No overwriting without -f.
    assert!(!tfc(&["decompress", c, "-o", b]).status.success());
    // A damaged file is an error and leaves no output behind.
    let mut bytes = std::fs::read(&coded).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let bad = dir.path().join("bad.tfc");
    std::fs::write(&bad, &bytes).unwrap();
    let out_path = dir.path().join("bad.ppm");
    let out = tfc(&[
        "decompress",
        bad.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert!(!out_path.exists());
}
