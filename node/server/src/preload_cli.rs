//! `berth preload`: the list in, a progress bar (on a terminal) and one line per image out.

use berth_internal_api::preload::{self, Platforms};
use berth_internal_api::InternalClient;

/// Load every image of `list` (one reference per line) with `parallel` at a time.
pub fn run(c: &InternalClient, list: &str, platforms: &[String], parallel: usize, json: bool) -> anyhow::Result<()> {
    let images = preload::parse_list(list).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(!images.is_empty(), "the list names no image");
    let platforms =
        if platforms.iter().any(|p| p == "all") { Platforms::All } else { Platforms::Only(platforms.to_vec()) };
    let bar = indicatif::ProgressBar::new(images.len() as u64);
    let tty = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    if !tty {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    } else if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} images {msg}") {
        bar.set_style(style);
    }
    let started = std::time::Instant::now();
    let report = preload::load_all(c, &images, &platforms, parallel, &|o| {
        bar.inc(1);
        if !json {
            let line = match &o.error {
                None => format!(
                    "ok      {} ({} manifests, {} blobs, {})",
                    o.image,
                    o.manifests,
                    o.blobs,
                    crate::gc::human_bytes(o.bytes)
                ),
                Some(e) => format!("FAILED  {}: {e}", o.image),
            };
            // Above the bar on a terminal; plain lines otherwise (a hidden bar prints nothing).
            if tty {
                bar.println(line);
            } else {
                println!("{line}");
            }
        }
    });
    bar.finish_and_clear();
    let failed = report.iter().filter(|o| o.error.is_some()).count();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let bytes: u64 = report.iter().map(|o| o.bytes).sum();
        println!(
            "{} of {} images loaded ({}) in {:.1} s",
            report.len() - failed,
            report.len(),
            crate::gc::human_bytes(bytes),
            started.elapsed().as_secs_f64()
        );
    }
    anyhow::ensure!(failed == 0, "{failed} image(s) could not be loaded");
    Ok(())
}
