//! The mask choice of ISO/IEC 18004 (§7.8): the data modules masked with each of the eight
//! patterns in turn, each result scored by the penalty rules of §7.8.3, the lowest score kept.
//!
//! The `qrcode` crate makes the same choice by copying its canvas for every pattern and scanning
//! each copy module by module, with its own reading of rule N4 (a score linear in the dark
//! ratio, not the standard's steps of 5%). Here the symbol is a bitmap, one bit per module, and
//! each rule is a handful of word operations per row: the eight candidates cost about as much as
//! drawing the symbol once.
//!
//! The rules, as the standard's Table 11 states them and as ZXing reads them (each counted over
//! the whole symbol, function patterns and format information included, in rows and columns):
//!
//! - N1: a run of 5 + i modules of one colour in a row or column scores 3 + i;
//! - N2: every 2 × 2 block of one colour (overlapping blocks counted) scores 3;
//! - N3: every dark-light-dark-dark-dark-light-dark run (1:1:3:1:1, one module per unit) with
//!   4 light modules before it or after it scores 40; modules outside the symbol are the quiet
//!   zone, so they count as light;
//! - N4: 10 points for each whole 5% by which the share of dark modules departs from 50%.
//!
//! Ties go to the lowest pattern reference.

use std::ops::{BitAnd, BitOr, BitXor, Not};

use qrcode::canvas::{Canvas, Module};
use qrcode::{Color, EcLevel};

/// Light modules kept around the symbol in a [`Bitmap`]: rule N3 looks 4 modules past a pattern.
const MARGIN: usize = 4;
/// Words per row: a version-40 symbol (177 modules) and its two margins take 185 bits.
const WORDS: usize = 3;
/// The widest symbol, version 40.
const MAX_WIDTH: usize = 177;
/// The mask patterns repeat every 12 rows: 2, 3, 4 (pattern 100) and 6 (the products) all divide it.
const PATTERN_ROWS: usize = 12;

/// One row of modules, bit `x + MARGIN` for column `x`, set when dark (or selected).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Row([u64; WORDS]);

impl Row {
    /// Bits `from..to`.
    const fn range(from: usize, to: usize) -> Self {
        let mut words = [0u64; WORDS];
        let mut i = from;
        while i < to {
            words[i / 64] |= 1 << (i % 64);
            i += 1;
        }
        Self(words)
    }

    fn contains(self, i: usize) -> bool {
        (self.0[i / 64] >> (i % 64)) & 1 == 1
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn assign(&mut self, i: usize, on: bool) {
        let bit = 1 << (i % 64);
        if on {
            self.0[i / 64] |= bit;
        } else {
            self.0[i / 64] &= !bit;
        }
    }

    fn count(self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// The row seen from `k` modules to the right (1 ≤ k < 64): bit `i` is bit `i + k`.
    fn ahead(self, k: u32) -> Self {
        let [w0, w1, w2] = self.0;
        Self([(w0 >> k) | (w1 << (64 - k)), (w1 >> k) | (w2 << (64 - k)), w2 >> k])
    }

    /// The row seen from `k` modules to the left (1 ≤ k < 64): bit `i` is bit `i - k`.
    fn behind(self, k: u32) -> Self {
        let [w0, w1, w2] = self.0;
        Self([w0 << k, (w1 << k) | (w0 >> (64 - k)), (w2 << k) | (w1 >> (64 - k))])
    }
}

impl BitAnd for Row {
    type Output = Self;
    fn bitand(self, other: Self) -> Self {
        Self([self.0[0] & other.0[0], self.0[1] & other.0[1], self.0[2] & other.0[2]])
    }
}

impl BitOr for Row {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self([self.0[0] | other.0[0], self.0[1] | other.0[1], self.0[2] | other.0[2]])
    }
}

impl BitXor for Row {
    type Output = Self;
    fn bitxor(self, other: Self) -> Self {
        Self([self.0[0] ^ other.0[0], self.0[1] ^ other.0[1], self.0[2] ^ other.0[2]])
    }
}

impl Not for Row {
    type Output = Self;
    fn not(self) -> Self {
        Self([!self.0[0], !self.0[1], !self.0[2]])
    }
}

/// Whether mask pattern `reference` inverts the module in row `i`, column `j` (the standard's
/// Table 10, in its own variables).
const fn inverts(reference: usize, i: usize, j: usize) -> bool {
    match reference {
        0 => (i + j) % 2 == 0,
        1 => i % 2 == 0,
        2 => j % 3 == 0,
        3 => (i + j) % 3 == 0,
        4 => (i / 2 + j / 3) % 2 == 0,
        5 => (i * j) % 2 + (i * j) % 3 == 0,
        6 => ((i * j) % 2 + (i * j) % 3) % 2 == 0,
        _ => ((i * j) % 3 + (i + j) % 2) % 2 == 0,
    }
}

/// The modules each pattern inverts, by row modulo [`PATTERN_ROWS`], over the widest symbol.
const PATTERNS: [[Row; PATTERN_ROWS]; 8] = {
    let mut patterns = [[Row([0; WORDS]); PATTERN_ROWS]; 8];
    let mut reference = 0;
    while reference < 8 {
        let mut i = 0;
        while i < PATTERN_ROWS {
            let mut j = 0;
            while j < MAX_WIDTH {
                if inverts(reference, i, j) {
                    let bit = j + MARGIN;
                    patterns[reference][i].0[bit / 64] |= 1 << (bit % 64);
                }
                j += 1;
            }
            i += 1;
        }
        reference += 1;
    }
    patterns
};

/// The 15 format information bits for an error correction level and a mask pattern: the
/// level's 2 bits and the pattern's 3, their BCH(15, 5) remainder, then XOR 101010000010010
/// (§7.9.1).
fn format_bits(ec_level: EcLevel, reference: usize) -> u32 {
    let level = match ec_level {
        EcLevel::L => 0b01,
        EcLevel::M => 0b00,
        EcLevel::Q => 0b11,
        EcLevel::H => 0b10,
    };
    let data = (level << 3) | reference as u32;
    let mut remainder = data;
    for _ in 0..10 {
        remainder = (remainder << 1) ^ ((remainder >> 9) * 0x537);
    }
    ((data << 10) | remainder) ^ 0x5412
}

/// A symbol, one [`Row`] per row, with [`MARGIN`] light rows above and below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Bitmap {
    width: usize,
    rows: Vec<Row>,
}

impl Bitmap {
    fn light(width: usize) -> Self {
        assert!(width <= MAX_WIDTH, "a QR symbol is at most {MAX_WIDTH} modules wide");
        Self { width, rows: vec![Row::default(); width + 2 * MARGIN] }
    }

    /// A `width` × `width` bitmap with the modules `dark(x, y)` says are dark.
    #[cfg(test)]
    fn from_fn(width: usize, dark: impl Fn(usize, usize) -> bool) -> Self {
        let mut bitmap = Self::light(width);
        for y in 0..width {
            for x in 0..width {
                if dark(x, y) {
                    bitmap.rows[y + MARGIN].insert(x + MARGIN);
                }
            }
        }
        bitmap
    }

    pub(super) fn width(&self) -> usize {
        self.width
    }

    pub(super) fn is_dark(&self, x: usize, y: usize) -> bool {
        self.rows[y + MARGIN].contains(x + MARGIN)
    }

    /// The modules, row by row, as the `qrcode` renderers take them.
    pub(super) fn colors(&self) -> Vec<Color> {
        let mut colors = Vec::with_capacity(self.width * self.width);
        for y in 0..self.width {
            colors.extend((0..self.width).map(|x| if self.is_dark(x, y) { Color::Dark } else { Color::Light }));
        }
        colors
    }

    fn assign(&mut self, x: usize, y: usize, dark: bool) {
        self.rows[y + MARGIN].assign(x + MARGIN, dark);
    }

    /// The penalty score of §7.8.3, rule by rule (see the module documentation).
    pub(super) fn penalty(&self) -> Penalty {
        let width = self.width;
        let (top, bottom) = (MARGIN, MARGIN + width);
        let inside = Row::range(MARGIN, MARGIN + width);
        let around = Row::range(0, width + 2 * MARGIN);
        let rows = &self.rows;
        let dark = |y: usize| rows[y];
        // Light modules of the symbol, for N1 and N2, which stop at its edge.
        let light = |y: usize| !rows[y] & inside;
        // Light modules with the quiet zone around the symbol, for N3.
        let light_around = |y: usize| !rows[y] & around;
        // A set bit where 5 modules of one colour start: a run of n ≥ 5 modules has n - 4 of
        // them, and the first one where the run begins, so n - 2 is the count plus 2 per start.
        let runs = |five: Row, before: Row| five.count() + 2 * (five & !before).count();

        let mut penalty = Penalty::default();
        let mut dark_modules = 0;
        // Where vertical runs of 5 start in the row above: dark, light.
        let mut above = [Row::default(); 2];
        for y in top..bottom {
            let (d, l, la) = (dark(y), light(y), light_around(y));
            dark_modules += d.count();
            for c in [d, l] {
                let five = c & c.ahead(1) & c.ahead(2) & c.ahead(3) & c.ahead(4);
                penalty.runs += runs(five, five.behind(1));
            }
            if y + 5 <= bottom {
                let five_dark = d & dark(y + 1) & dark(y + 2) & dark(y + 3) & dark(y + 4);
                let five_light = l & light(y + 1) & light(y + 2) & light(y + 3) & light(y + 4);
                penalty.runs += runs(five_dark, above[0]) + runs(five_light, above[1]);
                above = [five_dark, five_light];
            }
            if y + 1 < bottom {
                for pair in [d & dark(y + 1), l & light(y + 1)] {
                    penalty.blocks += 3 * (pair & pair.ahead(1)).count();
                }
            }
            let finder = d & la.ahead(1) & d.ahead(2) & d.ahead(3) & d.ahead(4) & la.ahead(5) & d.ahead(6);
            let before = la.behind(1) & la.behind(2) & la.behind(3) & la.behind(4);
            let after = la.ahead(7) & la.ahead(8) & la.ahead(9) & la.ahead(10);
            penalty.finders += 40 * (finder & (before | after)).count();
            if y + 7 <= bottom {
                let la = light_around;
                let finder = d & la(y + 1) & dark(y + 2) & dark(y + 3) & dark(y + 4) & la(y + 5) & dark(y + 6);
                let before = la(y - 1) & la(y - 2) & la(y - 3) & la(y - 4);
                let after = la(y + 7) & la(y + 8) & la(y + 9) & la(y + 10);
                penalty.finders += 40 * (finder & (before | after)).count();
            }
        }
        let total = u32::try_from(width * width).expect("at most 177 × 177 modules");
        penalty.balance = 10 * ((2 * dark_modules).abs_diff(total) * 10 / total);
        penalty
    }
}

/// The penalty points of one masked symbol, by rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Penalty {
    /// N1: runs of 5 or more modules of one colour.
    runs: u32,
    /// N2: 2 × 2 blocks of one colour.
    blocks: u32,
    /// N3: finder-like patterns.
    finders: u32,
    /// N4: the dark proportion's distance from half.
    balance: u32,
}

impl Penalty {
    fn total(self) -> u32 {
        self.runs + self.blocks + self.finders + self.balance
    }
}

/// The symbol before masking: which modules are dark, and which the mask applies to.
pub(super) struct Unmasked {
    ec_level: EcLevel,
    modules: Bitmap,
    data: Bitmap,
}

impl Unmasked {
    /// Reads a canvas with its function patterns drawn and its data placed, not yet masked.
    /// Format information is written per pattern, so its placeholder is ignored.
    pub(super) fn from_canvas(canvas: &Canvas, width: usize, ec_level: EcLevel) -> Self {
        let mut modules = Bitmap::light(width);
        let mut data = Bitmap::light(width);
        // Version 40 is 177 modules wide, so the canvas's i16 coordinates hold every column.
        let coordinates = (0..width).zip(0i16..);
        for (y, cy) in coordinates.clone() {
            for (x, cx) in coordinates.clone() {
                let (x, y) = (x + MARGIN, y + MARGIN);
                match canvas.get(cx, cy) {
                    Module::Masked(Color::Dark) => modules.rows[y].insert(x),
                    Module::Masked(Color::Light) => {}
                    Module::Unmasked(color) => {
                        data.rows[y].insert(x);
                        if color == Color::Dark {
                            modules.rows[y].insert(x);
                        }
                    }
                    // A remainder bit (§7.7.3): a light data module.
                    Module::Empty => data.rows[y].insert(x),
                }
            }
        }
        Self { ec_level, modules, data }
    }

    /// The symbol under mask pattern `reference` (0 to 7), format information included, written
    /// into `out` (a bitmap of the same width, reused across patterns).
    fn mask_into(&self, reference: usize, out: &mut Bitmap) {
        let width = self.modules.width;
        for y in MARGIN..MARGIN + width {
            let pattern = PATTERNS[reference][(y - MARGIN) % PATTERN_ROWS];
            out.rows[y] = self.modules.rows[y] ^ (self.data.rows[y] & pattern);
        }
        let bits = format_bits(self.ec_level, reference);
        let bit = |i: usize| (bits >> i) & 1 == 1;
        // Beside the top-left finder pattern, then split between the other two (§7.9.1, Figure 25).
        for i in 0..15 {
            let (x, y) = match i {
                0..=5 => (8, i),
                6 => (8, 7),
                7 => (8, 8),
                8 => (7, 8),
                _ => (14 - i, 8),
            };
            out.assign(x, y, bit(i));
            let (x, y) = if i < 8 { (width - 1 - i, 8) } else { (8, width - 15 + i) };
            out.assign(x, y, bit(i));
        }
        out.assign(8, width - 8, true);
    }

    /// The symbol under mask pattern `reference` (0 to 7).
    #[cfg(test)]
    fn masked(&self, reference: usize) -> Bitmap {
        let mut out = Bitmap::light(self.modules.width);
        self.mask_into(reference, &mut out);
        out
    }

    /// The pattern with the lowest penalty (the lowest reference on a tie) and the symbol under it.
    pub(super) fn choose(&self) -> (u8, Bitmap) {
        let mut candidate = Bitmap::light(self.modules.width);
        let mut best = (u32::MAX, 0);
        for reference in 0..8 {
            self.mask_into(reference, &mut candidate);
            let score = candidate.penalty().total();
            if score < best.0 {
                best = (score, reference);
            }
        }
        self.mask_into(best.1, &mut candidate);
        (best.1 as u8, candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qrcode::bits::Bits;
    use qrcode::canvas::MaskPattern;
    use qrcode::Version;

    /// A small deterministic generator (SplitMix64).
    struct Random(u64);

    impl Random {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ z >> 30).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ z >> 27).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ z >> 31) % n
        }
    }

    /// The rules of the module documentation applied module by module, as plainly as they read.
    fn naive_penalty(width: usize, dark: &dyn Fn(usize, usize) -> bool) -> Penalty {
        let lines: Vec<Vec<bool>> = (0..width)
            .map(|y| (0..width).map(|x| dark(x, y)).collect())
            .chain((0..width).map(|x| (0..width).map(|y| dark(x, y)).collect()))
            .collect();
        let mut penalty = Penalty::default();
        for line in &lines {
            let mut start = 0;
            while start < width {
                let end = (start..width).find(|&i| line[i] != line[start]).unwrap_or(width);
                if end - start >= 5 {
                    penalty.runs += 3 + (end - start - 5) as u32;
                }
                start = end;
            }
            let light = |i: isize| i < 0 || i >= width as isize || !line[i as usize];
            let finder = [true, false, true, true, true, false, true];
            for j in 0..width - 6 {
                if (0..7).all(|k| line[j + k] == finder[k]) {
                    let j = j as isize;
                    if (j - 4..j).all(light) || (j + 7..j + 11).all(light) {
                        penalty.finders += 40;
                    }
                }
            }
        }
        for y in 0..width - 1 {
            for x in 0..width - 1 {
                let c = dark(x, y);
                if dark(x + 1, y) == c && dark(x, y + 1) == c && dark(x + 1, y + 1) == c {
                    penalty.blocks += 3;
                }
            }
        }
        let dark_modules = (0..width * width).filter(|i| dark(i % width, i / width)).count();
        let percent = dark_modules as f64 * 100.0 / (width * width) as f64;
        penalty.balance = 10 * ((percent - 50.0).abs() / 5.0).floor() as u32;
        penalty
    }

    #[test]
    fn penalty_matches_the_rules_applied_module_by_module() {
        let mut random = Random(0x5eed);
        for round in 0..200 {
            let width = [21, 25, 57, 61, 64, 69, 121, 177][round % 8];
            // Sparse, balanced and dense bitmaps, so that every rule sees long runs and patterns.
            let density = [2, 5, 8][round % 3];
            let cells: Vec<bool> = (0..width * width).map(|_| random.below(10) < density).collect();
            let dark = |x: usize, y: usize| cells[y * width + x];
            assert_eq!(Bitmap::from_fn(width, dark).penalty(), naive_penalty(width, &dark), "round {round}");
        }
    }

    #[test]
    fn n4_counts_whole_steps_of_five_percent() {
        // 21 × 21 = 441 modules: 242 dark is 54.9% (no step), 243 is 55.1% (one step).
        for (dark_modules, steps) in [(220, 0), (242, 0), (243, 1), (198, 1), (199, 0), (0, 10), (441, 10)] {
            let bitmap = Bitmap::from_fn(21, |x, y| y * 21 + x < dark_modules);
            assert_eq!(bitmap.penalty().balance, 10 * steps, "{dark_modules} dark");
        }
    }

    #[test]
    fn n3_counts_the_quiet_zone_as_light() {
        // One finder-like run at the left edge of row 10 of an otherwise checkered symbol
        // (checkers make no runs, blocks or patterns): the quiet zone before it is light.
        let dark = |x: usize, y: usize| {
            if y == 10 && x < 11 {
                [1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1][x] == 1
            } else {
                (x + y) % 2 == 0
            }
        };
        assert_eq!(Bitmap::from_fn(21, dark).penalty().finders, 40);
        assert_eq!(naive_penalty(21, &dark).finders, 40);
    }

    fn canvas(version: i16, ec_level: EcLevel, data: &[u8]) -> Canvas {
        let version = Version::Normal(version);
        let mut bits = Bits::new(version);
        bits.push_byte_data(data).unwrap();
        bits.push_terminator(ec_level).unwrap();
        let (data, ec) = qrcode::ec::construct_codewords(&bits.into_bytes(), version, ec_level).unwrap();
        let mut canvas = Canvas::new(version, ec_level);
        canvas.draw_all_functional_patterns();
        canvas.draw_data(&data, &ec);
        canvas
    }

    const ALL_PATTERNS: [MaskPattern; 8] = [
        MaskPattern::Checkerboard,
        MaskPattern::HorizontalLines,
        MaskPattern::VerticalLines,
        MaskPattern::DiagonalLines,
        MaskPattern::LargeCheckerboard,
        MaskPattern::Fields,
        MaskPattern::Diamonds,
        MaskPattern::Meadow,
    ];

    /// The patterns and the format information drawn here are the `qrcode` crate's, module for
    /// module, in versions with and without version information and remainder bits.
    #[test]
    fn masked_symbols_match_the_qrcode_crate() {
        let cases =
            [(1, EcLevel::Q), (2, EcLevel::L), (7, EcLevel::M), (12, EcLevel::Q), (13, EcLevel::H), (40, EcLevel::Q)];
        for (version, ec_level) in cases {
            // As many bytes as the version holds, so that data and error correction fill it.
            let capacity = Bits::new(Version::Normal(version)).max_len(ec_level).unwrap() / 8 - 3;
            let text: Vec<u8> = (0..capacity).map(|i| b"EP1:ABCxyz-_0123"[i % 16]).collect();
            let canvas = canvas(version, ec_level, &text);
            let width = Version::Normal(version).width() as usize;
            let unmasked = Unmasked::from_canvas(&canvas, width, ec_level);
            for (reference, pattern) in ALL_PATTERNS.into_iter().enumerate() {
                let mut theirs = canvas.clone();
                theirs.apply_mask(pattern);
                assert_eq!(
                    unmasked.masked(reference).colors(),
                    theirs.into_colors(),
                    "version {version}, pattern {reference}"
                );
            }
        }
    }

    #[test]
    fn choose_keeps_the_lowest_penalty() {
        let mut random = Random(7);
        for version in [1, 5, 12, 13, 22] {
            let text: Vec<u8> = (0..10).map(|_| b'A' + random.below(26) as u8).collect();
            let width = Version::Normal(version).width() as usize;
            let unmasked = Unmasked::from_canvas(&canvas(version, EcLevel::Q, &text), width, EcLevel::Q);
            let scores: Vec<u32> = (0..8).map(|r| unmasked.masked(r).penalty().total()).collect();
            let lowest = scores.iter().position(|s| s == scores.iter().min().unwrap()).unwrap();
            let (chosen, symbol) = unmasked.choose();
            assert_eq!(usize::from(chosen), lowest, "version {version}: {scores:?}");
            assert_eq!(symbol, unmasked.masked(lowest));
        }
    }

    /// The standard's own example (Annex I): "01234567" in numeric mode, version 1-M, for which
    /// it chooses pattern 010.
    #[test]
    fn annex_i_example_gets_the_standards_pattern() {
        let version = Version::Normal(1);
        let mut bits = Bits::new(version);
        bits.push_numeric_data(b"01234567").unwrap();
        bits.push_terminator(EcLevel::M).unwrap();
        let (data, ec) = qrcode::ec::construct_codewords(&bits.into_bytes(), version, EcLevel::M).unwrap();
        let mut canvas = Canvas::new(version, EcLevel::M);
        canvas.draw_all_functional_patterns();
        canvas.draw_data(&data, &ec);
        assert_eq!(Unmasked::from_canvas(&canvas, 21, EcLevel::M).choose().0, 0b010);
    }

    #[test]
    fn format_bits_match_the_standard() {
        // ISO/IEC 18004 Annex C, Table C.1: level Q with patterns 000 to 111, and two others.
        let level_q = [
            0b011_0101_0101_1111,
            0b011_0000_0110_1000,
            0b011_1111_0011_0001,
            0b011_1010_0000_0110,
            0b010_0100_1011_0100,
            0b010_0001_1000_0011,
            0b010_1110_1101_1010,
            0b010_1011_1110_1101,
        ];
        for (reference, bits) in level_q.into_iter().enumerate() {
            assert_eq!(format_bits(EcLevel::Q, reference), bits, "pattern {reference}");
        }
        assert_eq!(format_bits(EcLevel::M, 0), 0b101_0100_0001_0010);
        assert_eq!(format_bits(EcLevel::L, 0), 0b111_0111_1100_0100);
    }
}
