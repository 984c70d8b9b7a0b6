//! Contact sheets: a grid of rendered images, each scaled up (nearest neighbour) with its caption
//! underneath in a built-in 3×5 bitmap font, so a person sees a whole batch at a glance.

use pixelfarm_core::RgbImage;

/// Side each image is scaled up to (at most; integer factors only).
pub const CELL: u32 = 128;
/// Pixels each font pixel becomes.
const FONT_SCALE: u32 = 2;
/// Lines of caption under each image.
const CAPTION_LINES: u32 = 3;
/// Space around cells.
const PAD: u32 = 8;
/// Sheet background.
const PAPER: [u8; 3] = [250, 250, 250];
/// Caption ink.
const INK: [u8; 3] = [20, 20, 20];

/// A contact sheet as a PNG file (no text chunks: it is a view of a batch, not an output).
///
/// # Errors
/// Only if the PNG encoder fails.
pub fn sheet_png(sheet: &RgbImage) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, sheet.width, sheet.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&sheet.rgb)?;
    Ok(out)
}

/// The 3×5 glyph of `c` (rows top to bottom, `#` = ink); unknown characters draw as `?`.
fn glyph(c: char) -> &'static str {
    match c.to_ascii_lowercase() {
        'a' => ".#.#.#####.##.#",
        'b' => "##.#.###.#.###.",
        'c' => ".###..#..#...##",
        'd' => "##.#.##.##.###.",
        'e' => "####..##.#..###",
        'f' => "####..##.#..#..",
        'g' => ".###..#.##.#.##",
        'h' => "#.##.#####.##.#",
        'i' => "###.#..#..#.###",
        'j' => "..#..#..##.#.#.",
        'k' => "#.##.###.#.##.#",
        'l' => "#..#..#..#..###",
        'm' => "#.########.##.#",
        'n' => "##.#.##.##.##.#",
        'o' => ".#.#.##.##.#.#.",
        'p' => "##.#.###.#..#..",
        'q' => ".#.#.##.###..##",
        'r' => "##.#.###.#.##.#",
        's' => ".###...#...###.",
        't' => "###.#..#..#..#.",
        'u' => "#.##.##.##.####",
        'v' => "#.##.##.##.#.#.",
        'w' => "#.##.########.#",
        'x' => "#.##.#.#.#.##.#",
        'y' => "#.##.#.#..#..#.",
        'z' => "###..#.#.#..###",
        '0' => "####.##.##.####",
        '1' => ".#.##..#..#.###",
        '2' => "##...#.#.#..###",
        '3' => "##...#.#...###.",
        '4' => "#.##.####..#..#",
        '5' => "####..##...###.",
        '6' => ".###..####.####",
        '7' => "###..#.#..#..#.",
        '8' => "####.#####.####",
        '9' => "####.####..###.",
        ' ' => "...............",
        '.' => ".............#.",
        ',' => "..........#.#..",
        '-' => "......###......",
        ':' => "....#.....#....",
        '/' => "..#..#.#.#..#..",
        '_' => "............###",
        '#' => "#.#####.#####.#",
        '=' => "...###...###...",
        '(' => "..#.#..#..#...#",
        ')' => "#...#..#..#.#..",
        _ => "##...#.#.....#.",
    }
}

/// Draw `text` at `(x, y)` (top-left), `FONT_SCALE`d.
fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str) {
    for (i, ch) in text.chars().enumerate() {
        let bits: Vec<bool> = glyph(ch).chars().map(|b| b == '#').collect();
        for row in 0..5u32 {
            for col in 0..3u32 {
                if bits.get((row * 3 + col) as usize).copied().unwrap_or(false) {
                    for dy in 0..FONT_SCALE {
                        for dx in 0..FONT_SCALE {
                            img.put(
                                x + (i as u32 * 4 + col) * FONT_SCALE + dx,
                                y + row * FONT_SCALE + dy,
                                INK,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Greedy word wrap to `width` characters, at most `CAPTION_LINES` lines (the last one cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    for l in &mut lines {
        l.truncate(width);
    }
    lines.truncate(CAPTION_LINES as usize);
    lines
}

/// A grid of `images` (up to 8 per row), each scaled up to about [`CELL`] pixels with its caption
/// below.
pub fn contact_sheet(images: &[(RgbImage, String)]) -> RgbImage {
    let n = images.len().max(1) as u32;
    let cols = n.min(8);
    let rows = n.div_ceil(cols);
    let line_h = 6 * FONT_SCALE;
    let cell_w = CELL + PAD;
    let cell_h = CELL + PAD + CAPTION_LINES * line_h + PAD;
    let mut sheet = RgbImage::filled(cols * cell_w + PAD, rows * cell_h + PAD, PAPER);
    let chars_per_line = (CELL / (4 * FONT_SCALE)) as usize;
    for (k, (img, caption)) in images.iter().enumerate() {
        let (col, row) = (k as u32 % cols, k as u32 / cols);
        let (x0, y0) = (PAD + col * cell_w, PAD + row * cell_h);
        let scale = (CELL / img.width.max(img.height).max(1)).max(1);
        for y in 0..img.height {
            for x in 0..img.width {
                let Some(c) = img.pixel(x, y) else {
                    continue;
                };
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (sx, sy) = (x * scale + dx, y * scale + dy);
                        if sx < CELL && sy < CELL {
                            sheet.put(x0 + sx, y0 + sy, c);
                        }
                    }
                }
            }
        }
        for (l, text) in wrap(caption, chars_per_line).iter().enumerate() {
            draw_text(
                &mut sheet,
                x0,
                y0 + CELL + PAD / 2 + l as u32 * line_h,
                text,
            );
        }
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyphs_are_three_by_five() {
        for c in "abcdefghijklmnopqrstuvwxyz0123456789 .,-:/_#=()?".chars() {
            let g = glyph(c);
            assert_eq!(g.len(), 15, "{c}");
        }
    }

    #[test]
    fn a_sheet_has_every_image_and_ink_under_it() {
        let img = |v: u8| RgbImage {
            width: 32,
            height: 32,
            rgb: vec![v; 32 * 32 * 3],
        };
        let items: Vec<_> = (0..10)
            .map(|i| {
                (
                    img(i * 20),
                    format!("a small red circle on a blue background #{i}"),
                )
            })
            .collect();
        let sheet = contact_sheet(&items);
        assert_eq!(sheet.width, 8 * (CELL + PAD) + PAD);
        assert_eq!(sheet.rgb.len(), (sheet.width * sheet.height * 3) as usize);
        // Image 9 (second row, second column) is there, scaled 4x.
        let cell_h = CELL + PAD + CAPTION_LINES * 12 + PAD;
        let (x, y) = (PAD + (CELL + PAD) + 60, PAD + cell_h + 60);
        let i = ((y * sheet.width + x) * 3) as usize;
        assert_eq!(sheet.rgb[i], 180);
        // Some ink in the first caption band.
        let band = (PAD + CELL)..(PAD + CELL + 3 * 12);
        let inked = band
            .flat_map(|y| (PAD..PAD + CELL).map(move |x| (x, y)))
            .any(|(x, y)| sheet.rgb[((y * sheet.width + x) * 3) as usize] == INK[0]);
        assert!(inked);
        let png = sheet_png(&sheet).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }

    #[test]
    fn captions_wrap_on_words() {
        assert_eq!(
            wrap("a small red circle on a blue background", 16),
            vec!["a small red", "circle on a blue", "background"]
        );
    }
}
