//! Every `extern "C"` function's body is one guarded call (or forwards to another entry point),
//! so no entry point can let a panic unwind into C. The guard itself, and a panic forced inside a
//! real entry point, are tested in `src/error.rs` and `src/lib.rs`.

use std::path::PathBuf;

/// Body of the function whose signature starts at `from` in `src`: the text between the first `{`
/// after the signature and its matching `}`.
fn body(src: &str, from: usize) -> &str {
    let open = from + src[from..].find('{').expect("function body");
    let mut depth = 0usize;
    for (i, c) in src[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &src[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced braces");
}

/// Index of the parenthesis closing the first one opened in `code`.
fn closing_paren(code: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in code.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Every entry point is `guard(...)` or `guard_value(...)` and nothing else, so nothing runs
/// outside `catch_unwind`.
#[test]
fn every_entry_point_is_guarded() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        // Exported functions only: callbacks that tests hand to the library are not entry points.
        for (mark, _) in src.match_indices("#[no_mangle]") {
            let Some(offset) = src[mark..].find("extern \"C\" fn ") else {
                panic!("{}: #[no_mangle] without an extern \"C\" fn", path.display());
            };
            let at = mark + offset;
            let name: String = src[at + 14..].chars().take_while(|c| *c != '(').collect();
            let code: String = body(&src, at)
                .lines()
                .map(str::trim)
                .filter(|l| !l.starts_with("//"))
                .collect::<Vec<_>>()
                .join(" ");
            let code = code.trim();
            let guarded = ["guard(", "guard_value("].iter().any(|g| code.starts_with(g))
                && closing_paren(code) == Some(code.len() - 1);
            let forwards = code.starts_with("unsafe { hydrant_") && !code.contains(';');
            assert!(guarded || forwards, "{}: `{name}` is not guarded: {code}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 30, "found only {checked} entry points");
}
