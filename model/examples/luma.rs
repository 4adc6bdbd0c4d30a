//! Writes the luma of every image in a folder as 8-bit gray PNGs, with the
//! same conversion `tfc` uses for gray models (`image`'s `to_luma8`).
//! usage: cargo run --release -p tfc-model --example luma -- IN_DIR OUT_DIR

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        return Err("usage: luma IN_DIR OUT_DIR".into());
    };
    std::fs::create_dir_all(output)?;
    for entry in std::fs::read_dir(input)? {
        let path = entry?.path();
        if image::ImageFormat::from_path(&path).is_err() {
            continue;
        }
        let name = path
            .file_stem()
            .ok_or("no file name")?
            .to_string_lossy()
            .into_owned();
        image::open(&path)?
            .to_luma8()
            .save(std::path::Path::new(output).join(format!("{name}.png")))?;
    }
    Ok(())
}
