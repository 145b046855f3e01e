//! Shared by the crates' `tests/manual.rs`: a program's manual page lints clean with
//! mandoc and documents every option its `--help` lists.

use std::path::Path;
use std::process::Command;

/// Checks `man/<page>` against `<binary> --help`.
pub fn check(binary: &str, page: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let man_path = root.join("man").join(page);
    let lint = Command::new("mandoc")
        .args(["-T", "lint", "-W", "warning"])
        .arg(&man_path)
        .output()
        .expect("mandoc is needed to check the manual pages: apt-get install mandoc");
    assert!(
        lint.status.success() && lint.stdout.is_empty(),
        "mandoc -T lint {}:\n{}{}",
        man_path.display(),
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let man = std::fs::read_to_string(&man_path)
        .unwrap()
        .replace("\\-", "-")
        .replace("\\&", "");
    let help = Command::new(binary).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let mut checked = 0;
    for line in help.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        for word in line.split([' ', ',', '=', '[', ']', '<', '>']) {
            let word = word.trim_end_matches("...");
            let long = word.starts_with("--") && word.len() > 2;
            let short = word.len() == 2 && word.starts_with('-') && word != "--";
            if !(long || short) || word == "--help" || word == "-h" {
                continue;
            }
            // mdoc writes options as `Fl x` (shown `-x`); man(7) pages as `\-x`.
            let flag = word.trim_start_matches('-');
            let documented = man.contains(word)
                || man.contains(&format!("Fl {flag}"))
                || man.contains(&format!("Fl -{flag}"));
            assert!(
                documented,
                "{binary}: option {word} is not in {}",
                man_path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 2, "{binary}: no options found in --help:\n{help}");
}
