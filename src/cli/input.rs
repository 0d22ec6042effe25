//! Reading what commands take: the scanned QR code (its text, standard input or an image)
//! and the files named on the command line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use super::commands::ScanArgs;

/// What the scanner read: a QR text, or an image to find one in.
pub(super) enum Scanned {
    Text(String),
    Image { path: PathBuf, bytes: Vec<u8> },
}

impl ScanArgs {
    pub(super) fn scanned(&self) -> anyhow::Result<Scanned> {
        if let Some(path) = &self.image {
            return Ok(Scanned::Image { path: path.clone(), bytes: read_file(path)? });
        }
        match self.qr_text.as_deref() {
            Some("-") => {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
                Ok(Scanned::Text(strip_one_line_end(text)))
            }
            Some(text) => Ok(Scanned::Text(text.to_owned())),
            None => bail!("give the QR text or --image"),
        }
    }

    /// The QR text, read from the image if there is one.
    pub(super) fn qr_text(&self) -> anyhow::Result<String> {
        match self.scanned()? {
            Scanned::Text(text) => Ok(text),
            Scanned::Image { path, bytes } => image_error(epass_core::qr::read_image(&bytes), &path),
        }
    }
}

/// Removes one line feed, or carriage return and line feed, from the end of what was read on
/// standard input (`echo`, a keyboard-wedge scanner), and nothing else: the verifier refuses
/// any other change to the text (docs/FORMAT.md, *The QR symbol*).
pub(super) fn strip_one_line_end(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

pub(super) fn image_error<T>(result: Result<T, epass_core::qr::ReadImageError>, path: &Path) -> anyhow::Result<T> {
    result.with_context(|| format!("reading a QR code from {}", path.display()))
}

pub(super) fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
