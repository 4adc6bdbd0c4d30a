//! `tfc compress`, `tfc decompress` and `tfc info`: image files in and out
//! around the pure `tfc-codec` library.
//!
//! Inputs are read with the `image` crate in any format it knows and must be
//! 8-bit gray, gray+alpha, RGB or RGBA (no colour conversion is ever done).
//! Outputs are written to a temporary file next to the target and renamed
//! into place, so a failure leaves no partial file; an existing file is only
//! replaced with `-f`. `-` stands for stdin or stdout.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{DynamicImage, ImageFormat};
use tfc_codec::{CodingParams, Image, ModelFile, ModelSet};

/// Arguments of `tfc compress`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompressArgs {
    /// Input images (PNG, PNM, BMP, TIFF, QOI, ...); `-` reads stdin.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output file; `-` writes stdout. Default: the first input with `.tfc`
    /// (stdout when that input is stdin).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Model files (at most one gray and one RGB). Default: the built-in
    /// models.
    #[arg(long, num_args = 1..)]
    pub model: Vec<PathBuf>,
    /// Sub-pixel bits `m` of the coding lattice.
    #[arg(long, default_value_t = CodingParams::default().m)]
    pub subpixel_bits: u8,
    /// Most independent stacks: more decode in parallel but each costs a
    /// start-up, so one lane is used per 1024 tiles begun, up to this many.
    #[arg(long, default_value_t = CodingParams::default().lanes)]
    pub lanes: u16,
    /// How many of the 8 orientations of each tile (mirrors, transposes)
    /// the encoder tries, keeping the cheapest: 1 is fastest, 8 smallest.
    /// Decoding speed does not depend on it.
    #[arg(long, default_value_t = CodingParams::default().orientations)]
    pub orientations: u8,
    /// Overwrite an existing output file.
    #[arg(short, long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Arguments of `tfc decompress`.
#[derive(Debug, Clone, clap::Args)]
pub struct DecompressArgs {
    /// A tfc file; `-` reads stdin.
    pub input: PathBuf,
    /// Output image; its extension picks the format (PNG by default). A file
    /// with several images writes `NAME-1.EXT`, `NAME-2.EXT`, ... `-` writes
    /// stdout (PNG, one image only), also the default when the input is stdin.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Model files the input was coded with. Default: the built-in models.
    #[arg(long, num_args = 1..)]
    pub model: Vec<PathBuf>,
    /// Overwrite existing output files.
    #[arg(short, long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Arguments of `tfc info`.
#[derive(Debug, Clone, clap::Args)]
pub struct InfoArgs {
    /// tfc files; `-` reads stdin.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

fn is_stdio(p: &Path) -> bool {
    p.as_os_str() == "-"
}

fn read_input(path: &Path) -> Result<Vec<u8>> {
    if is_stdio(path) {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading stdin")?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes `bytes` to `path` atomically (temporary file and rename), or to
/// stdout for `-`. Refuses to replace an existing file unless `force`.
fn write_output(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    if is_stdio(path) {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)
            .and_then(|_| out.flush())
            .context("writing stdout")?;
        return Ok(());
    }
    check_writable(path, force)?;
    let name = path.file_name().context("output path has no file name")?;
    let tmp = path.with_file_name(format!(
        ".{}.tfc-tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

fn check_writable(path: &Path, force: bool) -> Result<()> {
    if !is_stdio(path) && path.exists() && !force {
        bail!("{} exists (use -f to overwrite)", path.display());
    }
    Ok(())
}

/// Converts a decoded image to the codec's 8-bit buffer without any colour
/// conversion; other sample types are refused.
pub fn to_codec_image(img: DynamicImage) -> Result<Image> {
    let (w, h) = (img.width(), img.height());
    let (channels, data) = match img {
        DynamicImage::ImageLuma8(b) => (1, b.into_raw()),
        DynamicImage::ImageLumaA8(b) => (2, b.into_raw()),
        DynamicImage::ImageRgb8(b) => (3, b.into_raw()),
        DynamicImage::ImageRgba8(b) => (4, b.into_raw()),
        other => bail!(
            "unsupported pixel type {:?}: tfc codes 8-bit gray, gray+alpha, RGB and RGBA \
             (16-bit and float images are not supported)",
            other.color()
        ),
    };
    Ok(Image::new(w, h, channels, data)?)
}

/// Converts a decoded codec image back to an `image` buffer.
pub fn to_dynamic_image(img: Image) -> Result<DynamicImage> {
    let (w, h) = (img.width, img.height);
    let bad = || anyhow::anyhow!("decoded buffer does not match its size");
    Ok(match img.channels {
        1 => DynamicImage::ImageLuma8(image::GrayImage::from_raw(w, h, img.data).ok_or_else(bad)?),
        2 => DynamicImage::ImageLumaA8(
            image::GrayAlphaImage::from_raw(w, h, img.data).ok_or_else(bad)?,
        ),
        3 => DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, img.data).ok_or_else(bad)?),
        _ => DynamicImage::ImageRgba8(image::RgbaImage::from_raw(w, h, img.data).ok_or_else(bad)?),
    })
}

/// Reads an input image file (or stdin) in any format the `image` crate
/// recognises from its content.
pub fn load_image(path: &Path) -> Result<Image> {
    let bytes = read_input(path)?;
    let img = image::load_from_memory(&bytes)
        .with_context(|| format!("decoding image {}", path.display()))?;
    to_codec_image(img).with_context(|| format!("in {}", path.display()))
}

/// Loads model files, or the built-in models when none are given.
fn load_models(paths: &[PathBuf]) -> Result<Vec<ModelFile>> {
    if !paths.is_empty() {
        return paths
            .iter()
            .map(|p| {
                let bytes =
                    std::fs::read(p).with_context(|| format!("reading model {}", p.display()))?;
                ModelFile::from_bytes(&bytes)
                    .with_context(|| format!("loading model {}", p.display()))
            })
            .collect();
    }
    let mut models = Vec::new();
    for channels in [1, 3] {
        if let Some(bytes) = crate::builtin::model_bytes(channels) {
            models.push(ModelFile::from_bytes(bytes).context("loading the built-in model")?);
        }
    }
    if models.is_empty() {
        bail!("this build has no built-in model; pass one with --model FILE");
    }
    Ok(models)
}

fn model_set(models: &[ModelFile]) -> Result<ModelSet<'_>> {
    let refs: Vec<&ModelFile> = models.iter().collect();
    Ok(ModelSet::new(&refs)?)
}

fn progress_bar(len: usize, hidden: bool, what: &str) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len as u64);
    let template = format!("{what} [{{bar:40}}] {{pos}}/{{len}} tiles {{elapsed}} eta {{eta}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

fn default_output(input: &Path, ext: &str) -> PathBuf {
    if is_stdio(input) {
        return PathBuf::from("-");
    }
    input.with_extension(ext)
}

/// `tfc compress`.
pub fn compress(args: &CompressArgs) -> Result<()> {
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.inputs[0], "tfc"));
    check_writable(&output, args.force)?;
    if args.inputs.iter().filter(|p| is_stdio(p)).count() > 1 {
        bail!("stdin can be read only once");
    }
    let images = args
        .inputs
        .iter()
        .map(|p| load_image(p))
        .collect::<Result<Vec<_>>>()?;
    let models = load_models(&args.model)?;
    let set = model_set(&models)?;
    let params = CodingParams {
        m: args.subpixel_bits,
        lanes: tfc_codec::lanes_for(&set, &images, args.lanes)?,
        orientations: args.orientations,
    };
    let pb = progress_bar(
        tfc_codec::tiles_for_images(&set, &images)?,
        args.no_progress,
        "compress",
    );
    let bytes = tfc_codec::encode_images_with(&set, &images, &params, &|n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    write_output(&output, &bytes, args.force)?;
    let dims: usize = images.iter().map(|i| i.data.len()).sum();
    tracing::info!(
        bytes = bytes.len(),
        bpd = bytes.len() as f64 * 8.0 / dims as f64,
        "compressed"
    );
    Ok(())
}

/// Output paths for `count` decoded images.
fn output_paths(base: &Path, count: usize) -> Result<Vec<PathBuf>> {
    if count == 1 {
        return Ok(vec![base.to_path_buf()]);
    }
    if is_stdio(base) {
        bail!("the file holds {count} images; stdout takes one (give -o NAME.png)");
    }
    let stem = base
        .file_stem()
        .context("output path has no file name")?
        .to_string_lossy();
    let ext = base
        .extension()
        .map_or("png".into(), |e| e.to_string_lossy());
    Ok((1..=count)
        .map(|i| base.with_file_name(format!("{stem}-{i}.{ext}")))
        .collect())
}

/// The output format for `path`: from its extension, PNG when unknown or
/// stdout. Lossy formats are refused.
fn output_format(path: &Path) -> Result<ImageFormat> {
    if is_stdio(path) {
        return Ok(ImageFormat::Png);
    }
    let format = ImageFormat::from_path(path).unwrap_or(ImageFormat::Png);
    if matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP
    ) {
        bail!("{format:?} output would not keep the exact pixels; use .png, .pnm, .tiff, .bmp or .qoi");
    }
    Ok(format)
}

fn encode_image(img: Image, format: ImageFormat) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    to_dynamic_image(img)?
        .write_to(&mut buf, format)
        .with_context(|| format!("writing {format:?} (this format may not hold these channels)"))?;
    Ok(buf.into_inner())
}

/// `tfc decompress`.
pub fn decompress(args: &DecompressArgs) -> Result<()> {
    let bytes = read_input(&args.input)?;
    let info =
        tfc_codec::inspect(&bytes).with_context(|| format!("reading {}", args.input.display()))?;
    let base = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.input, "png"));
    let paths = output_paths(&base, info.header.images.len())?;
    for p in &paths {
        check_writable(p, args.force)?;
    }
    let models = load_models(&args.model)?;
    let set = model_set(&models)?;
    let pb = progress_bar(
        tfc_codec::tiles_for_header(&set, &info.header)?,
        args.no_progress,
        "decompress",
    );
    let limits = tfc_codec::Limits::default();
    let images = tfc_codec::decode_file_with(&set, &bytes, &limits, &|n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    // Encode every output before writing any, so a failure writes nothing.
    let encoded = images
        .into_iter()
        .zip(&paths)
        .map(|(img, p)| encode_image(img, output_format(p)?))
        .collect::<Result<Vec<_>>>()?;
    for (data, p) in encoded.iter().zip(&paths) {
        write_output(p, data, args.force)?;
    }
    Ok(())
}

/// A human-readable description of a tfc file's header.
pub fn describe(info: &tfc_codec::FileInfo) -> String {
    let h = &info.header;
    let mut s = format!(
        "tfc format {}, m = {}, {} lane(s), header {} B, payload {} B\n",
        h.version,
        h.m,
        h.lane_words.len(),
        info.header_bytes,
        info.payload_bytes
    );
    for m in &h.models {
        s += &format!(
            "  model: {} channel(s), tile {}, patch {}, id {}\n",
            m.channels,
            m.tile,
            m.patch,
            tfc_codec::model_file::hex(&m.id)
        );
    }
    for (i, e) in h.images.iter().enumerate() {
        let kind = ["gray", "gray+alpha", "RGB", "RGBA"][(e.channels - 1) as usize];
        let dims = e.width as f64 * e.height as f64 * e.channels as f64;
        s += &format!(
            "  image {}: {}x{} {kind}, {}-bit, via {}-channel model, checksum {}\n",
            i + 1,
            e.width,
            e.height,
            e.bit_depth,
            e.model_channels,
            tfc_codec::model_file::hex(&e.checksum)
        );
        if h.images.len() == 1 {
            s += &format!(
                "  {:.4} bits per subpixel\n",
                (info.header_bytes + info.payload_bytes) as f64 * 8.0 / dims
            );
        }
    }
    s
}

/// `tfc info`.
pub fn info(args: &InfoArgs) -> Result<()> {
    for path in &args.inputs {
        let bytes = read_input(path)?;
        let info =
            tfc_codec::inspect(&bytes).with_context(|| format!("reading {}", path.display()))?;
        print!("{}:\n{}", path.display(), describe(&info));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_input_names_what_is_supported() {
        let img = DynamicImage::ImageRgb16(image::ImageBuffer::new(2, 2));
        let err = to_codec_image(img).unwrap_err().to_string();
        assert!(
            err.contains("8-bit gray, gray+alpha, RGB and RGBA"),
            "{err}"
        );
    }

    #[test]
    fn images_convert_both_ways_exactly() {
        let data: Vec<u8> = (0..24).map(|i| (i * 11) as u8).collect();
        for (c, w) in [(1u8, 6u32), (2, 3), (3, 2), (4, 3)] {
            let h = 24 / (w * c as u32);
            let img = Image::new(w, h, c, data[..(w * h * c as u32) as usize].to_vec()).unwrap();
            for format in [ImageFormat::Png, ImageFormat::Pnm] {
                let bytes = encode_image(img.clone(), format).unwrap();
                let back = to_codec_image(image::load_from_memory(&bytes).unwrap()).unwrap();
                assert_eq!(back, img);
            }
        }
    }

    #[test]
    fn existing_outputs_need_force_and_failures_leave_nothing() {
        let dir = std::env::temp_dir().join(format!("tfc-codec-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.bin");
        write_output(&p, b"one", false).unwrap();
        assert!(write_output(&p, b"two", false).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        write_output(&p, b"two", true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(write_output(&dir.join("missing/x.bin"), b"x", true).is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn several_images_get_numbered_outputs() {
        let p = output_paths(Path::new("dir/out.png"), 2).unwrap();
        assert_eq!(
            p,
            vec![
                PathBuf::from("dir/out-1.png"),
                PathBuf::from("dir/out-2.png")
            ]
        );
        assert!(output_paths(Path::new("-"), 2).is_err());
        assert!(output_format(Path::new("a.jpg")).is_err());
    }
}
