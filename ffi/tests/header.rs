//! `include/hydrant.h` is generated from this crate by cbindgen (as a library: nothing to
//! install) plus the banner sections below. The test fails when the committed header differs from
//! a fresh generation; `HYDRANT_BLESS=1 cargo test -p hydrant-ffi --release --test header`
//! rewrites it.

use std::path::{Path, PathBuf};

/// Banner sections: the first declaration of each (a function or `#define` name) and its title.
/// Declarations follow the order of the Rust modules, so each section is one module's functions.
const SECTIONS: &[(&str, &str)] = &[
    ("HYDRANT_ABI_VERSION", "Constants and types"),
    ("hydrant_version", "Version and errors"),
    ("hydrant_tensor_new", "Tensors"),
    ("hydrant_model_default_params", "Models: loading and description"),
    ("hydrant_model_run", "Inference"),
    ("hydrant_features_new", "Features"),
    ("hydrant_model_load_parts", "Heads: head files, swaps, trainability, export"),
    ("hydrant_train_params_default", "Training parameters"),
    ("hydrant_trainer_new", "Fine-tuning heads"),
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("../include/hydrant.h")
}

/// Runs cbindgen on the crate's sources with `cbindgen.toml`, then adds the sections.
fn generate() -> String {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen failed on ffi/src");
    let mut raw = Vec::new();
    bindings.write(&mut raw);
    add_sections(&String::from_utf8(raw).expect("UTF-8 header"))
}

/// Writes types by their typedef names (`hydrant_status`, not `enum hydrant_status`) outside their
/// definitions, and inserts a banner before the doc comment of each section's first declaration.
fn add_sections(header: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut paren: Option<usize> = None;
    for line in header.lines() {
        let plain =
            |l: &str| l.replace("enum hydrant_", "hydrant_").replace("struct hydrant_", "hydrant_");
        let line = match (paren, line.starts_with("typedef")) {
            // A continuation of a declaration: align with its opening parenthesis.
            (Some(col), _) => format!("{}{}", " ".repeat(col + 1), plain(line.trim_start())),
            (None, true) => line.to_string(),
            (None, false) => plain(line),
        };
        let is_decl = !line.starts_with([' ', '/', '#', '}']) && line.contains('(');
        paren = match line.trim_end().ends_with(';') || line.trim_end().ends_with('{') {
            true => None,
            false if is_decl => line.find('('),
            false => paren,
        };
        lines.push(line);
    }
    for (anchor, title) in SECTIONS.iter().rev() {
        let decl = lines
            .iter()
            .position(|l| {
                let code = !l.starts_with([' ', '/']);
                l.starts_with(&format!("#define {anchor} "))
                    || (code
                        && (l.contains(&format!(" {anchor}("))
                            || l.contains(&format!("*{anchor}("))))
            })
            .unwrap_or_else(|| panic!("section anchor `{anchor}` not found in the header"));
        let start = (0..decl)
            .rev()
            .find(|&i| lines[i].trim_start() == "/**")
            .filter(|&i| lines[i..decl].iter().all(|l| !l.trim().is_empty()))
            .unwrap_or(decl);
        let rule = "=".repeat(96);
        let banner =
            [format!("/* {rule}"), format!(" * {title}"), format!(" * {rule} */"), String::new()];
        lines.splice(start..start, banner);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

fn differs_at(a: &str, b: &str) -> String {
    let line = a.lines().zip(b.lines()).position(|(x, y)| x != y);
    match line {
        Some(i) => format!(
            "first difference at line {}:\n  committed: {}\n  generated: {}",
            i + 1,
            a.lines().nth(i).unwrap_or(""),
            b.lines().nth(i).unwrap_or("")
        ),
        None => format!("lengths differ ({} vs {} lines)", a.lines().count(), b.lines().count()),
    }
}

#[test]
fn committed_header_is_up_to_date() {
    let generated = generate();
    let path = header_path();
    if std::env::var_os("HYDRANT_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/hydrant.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale ({}); regenerate it with \
         `HYDRANT_BLESS=1 cargo test -p hydrant-ffi --release --test header`",
        Path::new("include/hydrant.h").display(),
        differs_at(&committed, &generated)
    );
}

#[test]
fn header_has_no_todo_and_documents_every_function() {
    let header = generate();
    for word in ["TODO", "FIXME", "XXX"] {
        assert!(!header.contains(word), "the public header contains {word}");
    }
    let lines: Vec<&str> = header.lines().collect();
    let mut functions = 0;
    for (i, line) in lines.iter().enumerate() {
        let is_fn = line.contains(" hydrant_") && line.contains('(') && !line.starts_with(' ');
        if is_fn && !line.starts_with("#define") && !line.starts_with("typedef") {
            functions += 1;
            let doc_end = lines[..i].iter().rposition(|l| !l.trim().is_empty());
            assert!(
                doc_end.is_some_and(|j| lines[j].trim() == "*/"),
                "function without documentation: {line}"
            );
        }
    }
    assert!(functions >= 30, "found only {functions} functions");
    let at: Vec<usize> = SECTIONS
        .iter()
        .map(|(_, title)| header.find(&format!(" * {title}\n")).expect("section banner"))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "sections out of order (module order in lib.rs)");
}
