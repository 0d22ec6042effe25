//! QR symbols for pass texts, rendered as PNG, SVG or terminal text.
//!
//! One encoding for every text (docs/FORMAT.md, *The QR symbol*): a single 8-bit byte-mode
//! segment holding the whole text, no ECI, at level Q, in the smallest version that holds it.
//! So the version depends on the text's length alone, never on its characters. The `qrcode`
//! crate does the rest of the standard's work (error correction, function patterns, module
//! placement, rendering), except the mask choice, which `qr/mask.rs` makes much faster.

mod mask;

use qrcode::bits::Bits;
use qrcode::canvas::Canvas;
use qrcode::types::Mode;
use qrcode::{Color, EcLevel, Version};

/// Error correction level Q: a quarter of the symbol can be lost to glare on a phone screen.
pub const EC_LEVEL: EcLevel = EcLevel::Q;
/// Light modules around the symbol, as the QR standard asks.
pub const QUIET_ZONE: usize = 4;
/// Pixels per module in the PNG: about 600 pixels across for a version-13 symbol.
pub const PNG_MODULE_PIXELS: usize = 8;

/// The text does not fit any QR version at level Q.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a text of {len} bytes does not fit in a QR code at level Q")]
pub struct QrError {
    len: usize,
}

/// The version of the symbol [`QrSymbol::encode`] makes for `text`, without building it: the
/// smallest that holds `text.len()` bytes in one byte-mode segment at level Q.
pub fn version_of(text: &str) -> Result<u32, QrError> {
    version_for(text.len()).map(|v| v as u32)
}

/// The smallest version whose data capacity at [`EC_LEVEL`] holds a byte-mode segment of `len`
/// bytes: a 4-bit mode indicator, the character count (8 or 16 bits), 8 bits a byte.
fn version_for(len: usize) -> Result<i16, QrError> {
    (1..=40)
        .find(|&v| {
            let version = Version::Normal(v);
            let capacity = Bits::new(version).max_len(EC_LEVEL).expect("level Q exists in versions 1 to 40");
            4 + Mode::Byte.length_bits_count(version) + 8 * len <= capacity
        })
        .ok_or(QrError { len })
}

/// A QR symbol: the module matrix of one text.
pub struct QrSymbol {
    version: u32,
    mask: u8,
    modules: mask::Bitmap,
}

impl QrSymbol {
    /// Encodes a text as one byte-mode segment at level Q, in the smallest version that holds
    /// it, with the mask pattern the standard's penalty rules choose.
    pub fn encode(text: &str) -> Result<Self, QrError> {
        let v = version_for(text.len())?;
        let version = Version::Normal(v);
        let mut bits = Bits::new(version);
        bits.push_byte_data(text.as_bytes()).expect("the character count fits the chosen version");
        // The terminator, then the pad codewords 11101100 00010001 up to the capacity.
        bits.push_terminator(EC_LEVEL).expect("the chosen version holds the segment");
        let (data, ec) = qrcode::ec::construct_codewords(&bits.into_bytes(), version, EC_LEVEL)
            .expect("level Q exists in versions 1 to 40");
        let mut canvas = Canvas::new(version, EC_LEVEL);
        canvas.draw_all_functional_patterns();
        canvas.draw_data(&data, &ec);
        let width = version.width() as usize;
        let (mask, modules) = mask::Unmasked::from_canvas(&canvas, width, EC_LEVEL).choose();
        Ok(Self { version: v as u32, mask, modules })
    }

    /// The QR version (1 to 40).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The mask pattern reference (0 to 7) the penalty rules chose. A reader finds it in the
    /// symbol's format information; a verifier never needs it.
    pub fn mask(&self) -> u8 {
        self.mask
    }

    /// Modules per side, without the quiet zone.
    pub fn width(&self) -> usize {
        self.modules.width()
    }

    /// Whether the module at (x, y) is dark.
    pub fn is_dark(&self, x: usize, y: usize) -> bool {
        self.modules.is_dark(x, y)
    }

    /// A 1-bit greyscale PNG, [`PNG_MODULE_PIXELS`] per module with the quiet zone. Fast
    /// compression costs a seventh of the default's time; the Up filter turns the repeated
    /// pixel rows of each module into zeros, which Fast does compress (about 4 KB for a
    /// version-13 code, against 14 KB with the default filter). docs/PERFORMANCE.md.
    pub fn png(&self) -> Vec<u8> {
        self.png_with(png::Compression::Fast, png::FilterType::Up)
    }

    /// The PNG of [`QrSymbol::png`] with another compression level and row filter, for the
    /// benchmarks that justify the choice.
    #[doc(hidden)]
    pub fn png_with(&self, compression: png::Compression, filter: png::FilterType) -> Vec<u8> {
        let modules = self.width() + 2 * QUIET_ZONE;
        let side = modules * PNG_MODULE_PIXELS;
        let row_bytes = side.div_ceil(8);
        let mut pixels = vec![0xffu8; row_bytes * side];
        for y in 0..self.width() {
            for x in 0..self.width() {
                if !self.is_dark(x, y) {
                    continue;
                }
                let (px0, py0) = ((x + QUIET_ZONE) * PNG_MODULE_PIXELS, (y + QUIET_ZONE) * PNG_MODULE_PIXELS);
                for py in py0..py0 + PNG_MODULE_PIXELS {
                    let row = &mut pixels[py * row_bytes..(py + 1) * row_bytes];
                    for px in px0..px0 + PNG_MODULE_PIXELS {
                        row[px / 8] &= !(0x80 >> (px % 8));
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(pixels.len() / 8);
        let side = u32::try_from(side).expect("a QR PNG is far smaller than 4 billion pixels");
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::One);
        encoder.set_compression(compression);
        encoder.set_filter(filter);
        let mut writer = encoder.write_header().expect("writing to a Vec cannot fail");
        writer.write_image_data(&pixels).expect("the buffer matches the header");
        writer.finish().expect("writing to a Vec cannot fail");
        out
    }

    /// An SVG document, 8 units a module, with the quiet zone.
    pub fn svg(&self) -> String {
        let colors = self.modules.colors();
        renderer::<qrcode::render::svg::Color<'_>>(&colors, self.width()).module_dimensions(8, 8).build()
    }

    /// The symbol drawn with Unicode half blocks, two rows per line, for a terminal.
    pub fn terminal(&self) -> String {
        let colors = self.modules.colors();
        renderer::<qrcode::render::unicode::Dense1x2>(&colors, self.width())
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build()
    }
}

/// The `qrcode` crate's renderer over a symbol's modules (row by row), with the quiet zone.
fn renderer<P: qrcode::render::Pixel>(colors: &[Color], width: usize) -> qrcode::render::Renderer<'_, P> {
    let quiet_zone = u32::try_from(QUIET_ZONE).expect("a few modules");
    let mut renderer = qrcode::render::Renderer::new(colors, width, quiet_zone);
    renderer.quiet_zone(true);
    renderer
}

/// Why no QR text could be read from an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadImageError {
    /// Not a PNG or JPEG image this reader can decode.
    #[error("cannot decode the image: {0}")]
    Image(String),
    /// Larger than [`MAX_IMAGE_PIXELS`].
    #[error("image is too large ({width}x{height})")]
    TooLarge {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// No QR symbol found.
    #[error("no QR code found in the image")]
    NoCode,
    /// A symbol was found but not decoded (damaged, or not a text).
    #[error("QR code could not be decoded: {0}")]
    Undecodable(String),
}

/// Images with more pixels than this are refused before decoding (a 12-megapixel photo fits).
pub const MAX_IMAGE_PIXELS: u64 = 16_000_000;

/// Reads the QR text from a PNG or JPEG image (a screenshot, a photo of a phone screen, or
/// the PNG that `IssuePass` returns).
pub fn read_image(bytes: &[u8]) -> Result<String, ReadImageError> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ReadImageError::Image(e.to_string()))?;
    let (width, height) = reader.into_dimensions().map_err(|e| ReadImageError::Image(e.to_string()))?;
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS {
        return Err(ReadImageError::TooLarge { width, height });
    }
    let decoded = image::load_from_memory(bytes).map_err(|e| ReadImageError::Image(e.to_string()))?;
    let luma = decoded.to_luma8();
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(luma.width() as usize, luma.height() as usize, |x, y| {
            luma.get_pixel(x as u32, y as u32).0[0]
        });
    // rqrr 0.8 can panic on some images (an assertion in its grid sampling fires on a valid
    // symbol drawn at one pixel per module); an image from outside must never end the process.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let grid = prepared.detect_grids().into_iter().next().ok_or(ReadImageError::NoCode)?;
        let (_, text) = grid.decode().map_err(|e| ReadImageError::Undecodable(e.to_string()))?;
        Ok(text)
    }));
    read.unwrap_or_else(|_| Err(ReadImageError::Undecodable("the QR reader failed on this image".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG of `symbol` at one pixel per module with a 4-module quiet zone.
    fn one_pixel_per_module(symbol: &QrSymbol) -> Vec<u8> {
        let side = symbol.width() + 2 * QUIET_ZONE;
        let image = image::GrayImage::from_fn(side as u32, side as u32, |x, y| {
            let (x, y) = (x as usize, y as usize);
            let inside = (QUIET_ZONE..QUIET_ZONE + symbol.width()).contains(&x)
                && (QUIET_ZONE..QUIET_ZONE + symbol.width()).contains(&y);
            image::Luma([if inside && symbol.is_dark(x - QUIET_ZONE, y - QUIET_ZONE) { 0 } else { 255 }])
        });
        let mut png = Vec::new();
        image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        png
    }

    /// Regression: rqrr's assertion on a symbol drawn at one pixel per module must come back
    /// as an error, never a panic that ends a checkpoint's verifier.
    #[test]
    fn a_reader_panic_is_an_error() {
        let mut panicked_somewhere = false;
        for n in 0..40 {
            let text = format!("EP1:{}", "A".repeat(20 + 7 * n));
            let png = one_pixel_per_module(&QrSymbol::encode(&text).unwrap());
            match read_image(&png) {
                Ok(read) => assert_eq!(read, text),
                Err(ReadImageError::Undecodable(why)) if why == "the QR reader failed on this image" => {
                    panicked_somewhere = true
                }
                Err(_) => {}
            }
        }
        assert!(panicked_somewhere, "no symbol made the reader panic: the guard is untested");
    }

    #[test]
    fn png_has_the_expected_size() {
        let symbol = QrSymbol::encode("EP1:hello").unwrap();
        let png = symbol.png();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let reader = decoder.read_info().unwrap();
        let side = (symbol.width() + 2 * QUIET_ZONE) * PNG_MODULE_PIXELS;
        assert_eq!(reader.info().width as usize, side);
        assert_eq!(reader.info().bit_depth, png::BitDepth::One);
    }

    #[test]
    fn version_of_matches_the_symbol() {
        for len in [10, 100, 230, 300] {
            let text = format!("EP1:{}", "A1b_".repeat(len / 4));
            assert_eq!(version_of(&text).unwrap(), QrSymbol::encode(&text).unwrap().version(), "{len}");
        }
    }

    #[test]
    fn rendered_png_reads_back() {
        let text = "EP1:AaB_wgA45FmlChDG8clTAGsrihHZhtpxTS0hEgxDSEFOIFRBSSBNQU4aCemZs";
        assert_eq!(read_image(&QrSymbol::encode(text).unwrap().png()).unwrap(), text);
    }

    #[test]
    fn non_images_and_blank_images_are_refused() {
        assert!(matches!(read_image(b"not an image"), Err(ReadImageError::Image(_))));
        let blank = {
            let mut out = Vec::new();
            let mut encoder = png::Encoder::new(&mut out, 64, 64);
            encoder.set_color(png::ColorType::Grayscale);
            encoder.write_header().unwrap().write_image_data(&[0xff; 64 * 64]).unwrap();
            out
        };
        assert_eq!(read_image(&blank), Err(ReadImageError::NoCode));
    }
}
