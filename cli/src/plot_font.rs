//! A 3×5 pixel font for plot labels (digits, capitals — lower case drawn as capitals — and
//! `. - + : _ /`), drawn as filled squares: no font files or system fonts.

use plotters::prelude::*;

/// Pixel size of one font dot.
const DOT: i32 = 2;

/// Rows of a glyph, top to bottom, three bits each (4 = left column).
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' | 'O' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' | 'S' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        ':' => [0, 2, 0, 2, 0],
        '_' => [0, 0, 0, 0, 7],
        '/' => [1, 1, 2, 4, 4],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'D' => [6, 5, 5, 5, 6],
        'G' => [7, 4, 5, 5, 7],
        'J' => [1, 1, 1, 5, 7],
        'K' => [5, 5, 6, 5, 5],
        'Q' => [7, 5, 5, 7, 1],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        'C' => [7, 4, 4, 4, 7],
        'E' => [7, 4, 7, 4, 7],
        'F' => [7, 4, 7, 4, 4],
        'H' => [5, 5, 7, 5, 5],
        'P' => [6, 5, 6, 4, 4],
        'I' => [7, 2, 2, 2, 7],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'R' => [6, 5, 6, 5, 5],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        _ => [0; 5],
    }
}

/// Draws `text` with its top-left corner at pixel `at` of `area`.
pub fn text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    at: (i32, i32),
    text: &str,
    color: &RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (i, c) in text.chars().enumerate() {
        let x0 = at.0 + i as i32 * 4 * DOT;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    let (x, y) = (x0 + col * DOT, at.1 + row as i32 * DOT);
                    area.draw(&Rectangle::new(
                        [(x, y), (x + DOT - 1, y + DOT - 1)],
                        color.filled(),
                    ))?;
                }
            }
        }
    }
    Ok(())
}
