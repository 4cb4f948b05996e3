//! `xtask starter`: turn the finished code of one lab into the trainee's starter.
//!
//! A *solution region* is a pair of mdBook anchor lines named `solution`:
//!
//! ```text
//!     // TODO(lab02): the hint, kept in both solution and starter
//!     // ANCHOR: solution
//!     ...finished code...
//!     // ANCHOR_END: solution => Err(Status::unimplemented("lab02: ..."))
//! ```
//!
//! The starter replaces the region, both marker lines included, by the code
//! after `=>`, indented like the END line; without `=>` the region is removed.
//! mdBook hides every anchor line when the book includes the surrounding named
//! anchor, so the book shows the finished code without the markers.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

use anyhow::{Context, Result, bail};
use regex::Regex;

/// The marker name that delimits a region the starter strips.
const SOLUTION: &str = "solution";
/// How many lines before `ANCHOR: solution` may hold the `TODO(labNN)` hint.
const TODO_WINDOW: usize = 8;
/// The file in a starter directory that lists the files `xtask` wrote there.
const MANIFEST: &str = ".starter-files";

// The same patterns mdBook uses to find anchors (anywhere in a line).
static ANCHOR_START: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"ANCHOR:\s*([\w_-]+)").expect("valid regex"));
static ANCHOR_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"ANCHOR_END:\s*([\w_-]+)(.*)$").expect("valid regex"));

/// A problem with the solution markers of one file, at a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for MarkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.line, self.message)
    }
}

/// The starter text of one file and how many regions it replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripped {
    pub text: String,
    pub regions: usize,
}

enum Marker<'a> {
    Start,
    /// The END line; `Some(code)` when it says `=> code`.
    End(Result<Option<&'a str>, String>),
}

fn marker(line: &str) -> Option<Marker<'_>> {
    let line = line.trim_end_matches(['\n', '\r']);
    if let Some(cap) = ANCHOR_END.captures(line) {
        if &cap[1] != SOLUTION {
            return None;
        }
        let rest = cap.get(2).map_or("", |m| m.as_str()).trim();
        let end = if rest.is_empty() {
            Ok(None)
        } else if let Some(code) = rest.strip_prefix("=>") {
            let code = code.trim();
            if code.is_empty() {
                Err("nothing after `=>`: give the starter's code, or drop `=>` to remove the region"
                    .to_owned())
            } else {
                Ok(Some(code))
            }
        } else {
            Err(format!(
                "unexpected `{rest}` after `ANCHOR_END: solution` (write `=> code` to replace the region)"
            ))
        };
        return Some(Marker::End(end));
    }
    match ANCHOR_START.captures(line) {
        Some(cap) if &cap[1] == SOLUTION => Some(Marker::Start),
        _ => None,
    }
}

/// Replaces every solution region of `src`, a file of lab `lab`'s crate.
///
/// All marker problems of the file are reported together.
pub fn strip_solutions(src: &str, lab: u32) -> Result<Stripped, Vec<MarkerError>> {
    let todo = format!("TODO(lab{lab:02})");
    let lines: Vec<&str> = src.split_inclusive('\n').collect();
    let mut out = String::with_capacity(src.len());
    let mut errors = Vec::new();
    let mut regions = 0;
    // The 0-based line of the open region's START marker.
    let mut open: Option<usize> = None;

    for (i, line) in lines.iter().enumerate() {
        match marker(line) {
            Some(Marker::Start) => {
                if let Some(start) = open {
                    errors.push(MarkerError {
                        line: i + 1,
                        message: format!(
                            "nested solution region: the region opened on line {} is not closed yet",
                            start + 1
                        ),
                    });
                    continue;
                }
                let window = &lines[i.saturating_sub(TODO_WINDOW)..i];
                if !window.iter().any(|l| l.contains(&todo)) {
                    errors.push(MarkerError {
                        line: i + 1,
                        message: format!(
                            "solution region without a `// {todo}: ...` hint in the {TODO_WINDOW} lines before it"
                        ),
                    });
                }
                open = Some(i);
            }
            Some(Marker::End(end)) => {
                if open.take().is_none() {
                    errors.push(MarkerError {
                        line: i + 1,
                        message: "`ANCHOR_END: solution` without a matching `ANCHOR: solution`".to_owned(),
                    });
                    continue;
                }
                regions += 1;
                match end {
                    Err(message) => errors.push(MarkerError { line: i + 1, message }),
                    Ok(None) => {}
                    Ok(Some(code)) => {
                        let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
                        let newline = if line.ends_with("\r\n") {
                            "\r\n"
                        } else if line.ends_with('\n') {
                            "\n"
                        } else {
                            ""
                        };
                        out.push_str(&indent);
                        out.push_str(code);
                        out.push_str(newline);
                    }
                }
            }
            None if open.is_some() => {
                // Anchors are the same in starter and solution: none may hide in a region.
                let trimmed = line.trim_end_matches(['\n', '\r']);
                if let Some(cap) = ANCHOR_END.captures(trimmed).or_else(|| ANCHOR_START.captures(trimmed)) {
                    errors.push(MarkerError {
                        line: i + 1,
                        message: format!(
                            "anchor `{}` inside a solution region would vanish from the starter; \
                             put the region inside the anchor instead",
                            &cap[1]
                        ),
                    });
                }
            }
            None => out.push_str(line),
        }
    }
    if let Some(start) = open {
        errors.push(MarkerError {
            line: start + 1,
            message: "`ANCHOR: solution` is never closed by `ANCHOR_END: solution`".to_owned(),
        });
    }
    if errors.is_empty() { Ok(Stripped { text: out, regions }) } else { Err(errors) }
}

/// Puts `#![allow(unused)]` right after the leading `//!` lines of a crate root.
pub fn allow_unused(src: &str) -> String {
    const ATTR: &str = "#![allow(unused)] // starter: code still to write leaves items unused\n";
    let mut at = 0;
    for line in src.split_inclusive('\n') {
        if !line.trim_start().starts_with("//!") {
            break;
        }
        at += line.len();
    }
    let mut out = String::with_capacity(src.len() + ATTR.len() + 1);
    out.push_str(&src[..at]);
    if at > 0 && !src[..at].ends_with('\n') {
        out.push('\n');
    }
    out.push_str(ATTR);
    out.push_str(&src[at..]);
    out
}

/// A lab crate of the workspace: `labs/NN-name`.
#[derive(Debug, Clone)]
pub struct Lab {
    pub number: u32,
    /// Relative to the repository root, e.g. `labs/02-controller`.
    pub dir: PathBuf,
}

impl Lab {
    pub fn tag(&self) -> String {
        format!("lab{:02}", self.number)
    }
}

/// Every `labs/NN-*` directory that has a `src/`, in order.
pub fn all_labs(root: &Path) -> Result<Vec<Lab>> {
    let mut labs = Vec::new();
    let labs_dir = root.join("labs");
    for entry in std::fs::read_dir(&labs_dir).with_context(|| format!("reading {}", labs_dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((num, _)) = name.split_once('-') else {
            continue;
        };
        let Ok(number) = num.parse::<u32>() else {
            continue;
        };
        if num.len() == 2 && entry.path().join("src").is_dir() {
            labs.push(Lab { number, dir: Path::new("labs").join(&name) });
        }
    }
    labs.sort_by_key(|l| l.number);
    Ok(labs)
}

/// Parses `2`, `02`, `lab02` or `02-controller` and finds that lab.
pub fn find_lab(root: &Path, arg: &str) -> Result<Lab> {
    let digits: String = arg.trim_start_matches("lab").chars().take_while(char::is_ascii_digit).collect();
    let number: u32 = digits.parse().with_context(|| format!("`{arg}` is not a lab number such as 02"))?;
    let labs = all_labs(root)?;
    let known: Vec<String> = labs.iter().map(|l| l.dir.display().to_string()).collect();
    labs.into_iter()
        .find(|l| l.number == number)
        .with_context(|| format!("no lab {number:02} under labs/ (found: {})", known.join(", ")))
}

/// The result of stripping one lab's crate, without writing anything.
pub struct LabStarter {
    /// Relative path → starter text, for every `.rs` file under `src/`.
    pub files: Vec<(PathBuf, String)>,
    pub regions: usize,
    pub files_with_regions: usize,
}

/// Strips every `src/**/*.rs` of `lab`; errors are `path:line: message` lines.
pub fn strip_lab(root: &Path, lab: &Lab) -> Result<LabStarter, Vec<String>> {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    let mut regions = 0;
    let mut files_with_regions = 0;
    let src_dir = root.join(&lab.dir).join("src");
    let mut paths: Vec<PathBuf> = walkdir::WalkDir::new(&src_dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| e.into_path())
        .collect();
    paths.sort();
    for path in paths {
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let src = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("{}: {e}", rel.display()));
                continue;
            }
        };
        match strip_solutions(&src, lab.number) {
            Ok(stripped) => {
                regions += stripped.regions;
                files_with_regions += usize::from(stripped.regions > 0);
                let text = if rel == lab.dir.join("src/lib.rs") {
                    allow_unused(&stripped.text)
                } else {
                    stripped.text
                };
                files.push((rel, text));
            }
            Err(errs) => errors
                .extend(errs.into_iter().map(|e| format!("{}:{}: {}", rel.display(), e.line, e.message))),
        }
    }
    if errors.is_empty() && regions == 0 {
        errors.push(format!(
            "{}: no solution regions (`// ANCHOR: solution` ... `// ANCHOR_END: solution`) in src/; the starter would be the solution",
            lab.dir.display()
        ));
    }
    if errors.is_empty() { Ok(LabStarter { files, regions, files_with_regions }) } else { Err(errors) }
}

/// `starter --check`: checks the markers of `labs` (all of them when empty).
pub fn check(root: &Path, lab: Option<&str>) -> Result<()> {
    let labs = match lab {
        Some(arg) => vec![find_lab(root, arg)?],
        None => all_labs(root)?,
    };
    let mut failed = 0;
    for lab in &labs {
        match strip_lab(root, lab) {
            Ok(s) => println!(
                "{} ({}): {} solution regions in {} file(s)",
                lab.tag(),
                lab.dir.display(),
                s.regions,
                s.files_with_regions
            ),
            Err(errors) => {
                failed += 1;
                for e in &errors {
                    println!("{e}");
                }
                println!("{} ({}): FAILED, {} marker problems", lab.tag(), lab.dir.display(), errors.len());
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} labs have marker problems", labs.len());
    }
    Ok(())
}

/// The files to copy: tracked plus untracked-but-not-ignored, relative to `root`.
fn workspace_files(root: &Path) -> Result<BTreeSet<PathBuf>> {
    let out = Command::new("git")
        .current_dir(root)
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .output()
        .context("running git ls-files")?;
    if !out.status.success() {
        bail!("git ls-files failed in {}: {}", root.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
        .filter(|p| !(p.starts_with("book/book") || p.starts_with("target")))
        .collect())
}

fn copy_entry(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let meta = std::fs::symlink_metadata(from)?;
    if to.symlink_metadata().is_ok() {
        std::fs::remove_file(to).with_context(|| format!("replacing {}", to.display()))?;
    }
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
    } else {
        std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// `starter NN --out DIR`: writes the trainee's copy of the workspace.
pub fn generate(root: &Path, lab_arg: &str, out: &Path, force: bool) -> Result<()> {
    let lab = find_lab(root, lab_arg)?;
    let starter = strip_lab(root, &lab).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        anyhow::anyhow!("{}: {} marker problems, no starter written", lab.tag(), errors.len())
    })?;

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = out.canonicalize()?;
    let root = root.canonicalize()?;
    if root.starts_with(&out) {
        bail!("{} contains the repository itself; choose another --out", out.display());
    }
    let mut entries = std::fs::read_dir(&out)?;
    if entries.next().is_some() {
        if !force {
            bail!("{} is not empty (use --force to write over it)", out.display());
        }
        // Remove what an earlier run wrote, so files deleted since do not linger.
        if let Ok(list) = std::fs::read_to_string(out.join(MANIFEST)) {
            for rel in list.lines().filter(|l| !l.is_empty() && !l.contains("..")) {
                let _ = std::fs::remove_file(out.join(rel));
            }
        }
    }

    let out_in_repo = out.strip_prefix(&root).ok().map(Path::to_path_buf);
    let mut written = Vec::new();
    for rel in workspace_files(&root)? {
        if out_in_repo.as_ref().is_some_and(|o| rel.starts_with(o)) {
            continue;
        }
        let from = root.join(&rel);
        if from.symlink_metadata().is_err() {
            continue; // deleted in the work tree, still in the index
        }
        copy_entry(&from, &out.join(&rel))?;
        written.push(rel);
    }
    for (rel, text) in &starter.files {
        let to = out.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&to, text).with_context(|| format!("writing {}", to.display()))?;
        if !written.contains(rel) {
            written.push(rel.clone());
        }
    }
    let mut manifest: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    manifest.sort();
    std::fs::write(out.join(MANIFEST), manifest.join("\n") + "\n")?;
    println!(
        "starter for {} written to {}: {} files, {} solution regions stripped in {} file(s) of {}",
        lab.tag(),
        out.display(),
        written.len(),
        starter.regions,
        starter.files_with_regions,
        lab.dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(src: &str) -> Result<Stripped, Vec<MarkerError>> {
        strip_solutions(src, 2)
    }

    fn error_lines(src: &str) -> Vec<(usize, String)> {
        strip(src).expect_err("should fail").into_iter().map(|e| (e.line, e.message)).collect()
    }

    #[test]
    fn region_with_arrow_is_replaced_by_the_code_after_it() {
        let src = "\
fn create() -> Result<(), Status> {
    // TODO(lab02): create the volume
    // ANCHOR: solution
    let v = make();
    Ok(v)
    // ANCHOR_END: solution => Err(Status::unimplemented(\"lab02: CreateVolume\"))
}
";
        let out = strip(src).unwrap();
        assert_eq!(out.regions, 1);
        assert_eq!(
            out.text,
            "\
fn create() -> Result<(), Status> {
    // TODO(lab02): create the volume
    Err(Status::unimplemented(\"lab02: CreateVolume\"))
}
"
        );
    }

    #[test]
    fn region_without_arrow_is_removed() {
        let src = "a\n// TODO(lab02): x\n// ANCHOR: solution\nb\n// ANCHOR_END: solution\nc\n";
        let out = strip(src).unwrap();
        assert_eq!(out.text, "a\n// TODO(lab02): x\nc\n");
        assert_eq!(out.regions, 1);
    }

    #[test]
    fn replacement_is_indented_like_the_end_line() {
        let src = "    // TODO(lab02): hint\n  // ANCHOR: solution\n        x\n\t\t// ANCHOR_END: solution =>   todo!()  \n";
        assert_eq!(strip(src).unwrap().text, "    // TODO(lab02): hint\n\t\ttodo!()\n");
    }

    #[test]
    fn named_anchors_around_a_region_are_kept() {
        let src = "\
// ANCHOR: create-volume
fn f() {
    // TODO(lab02): hint
    // ANCHOR: solution
    body();
    // ANCHOR_END: solution => todo!()
}
// ANCHOR_END: create-volume
";
        let out = strip(src).unwrap().text;
        assert!(out.starts_with("// ANCHOR: create-volume\n"));
        assert!(out.ends_with("// ANCHOR_END: create-volume\n"));
        assert!(out.contains("    todo!()\n"));
        assert!(!out.contains("body()"));
    }

    #[test]
    fn several_regions_and_crlf_and_missing_final_newline_work() {
        let src = "// TODO(lab02): a\r\n// ANCHOR: solution\r\nx\r\n// ANCHOR_END: solution => 1\r\nmid\n// TODO(lab02): b\n// ANCHOR: solution\ny\n// ANCHOR_END: solution => 2";
        let out = strip(src).unwrap();
        assert_eq!(out.regions, 2);
        assert_eq!(out.text, "// TODO(lab02): a\r\n1\r\nmid\n// TODO(lab02): b\n2");
    }

    #[test]
    fn a_file_without_regions_is_unchanged() {
        let src = "fn main() {}\n// ANCHOR: other\n// ANCHOR_END: other\n";
        assert_eq!(strip(src).unwrap(), Stripped { text: src.to_owned(), regions: 0 });
    }

    #[test]
    fn todo_may_be_up_to_eight_lines_before_the_region() {
        let mut src = String::from("// TODO(lab02): long hint\n");
        src.push_str(&"// more hint\n".repeat(7));
        src.push_str("// ANCHOR: solution\nx\n// ANCHOR_END: solution\n");
        assert!(strip(&src).is_ok());
        let far =
            src.replacen("// TODO(lab02): long hint\n", "// TODO(lab02): long hint\n// one too many\n", 1);
        assert_eq!(error_lines(&far)[0].0, 10);
    }

    #[test]
    fn region_without_todo_is_an_error() {
        let errs = error_lines("fn f() {\n    // ANCHOR: solution\n    x\n    // ANCHOR_END: solution\n}\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, 2);
        assert!(errs[0].1.contains("TODO(lab02)"), "{}", errs[0].1);
    }

    #[test]
    fn todo_of_another_lab_does_not_count() {
        let errs = error_lines("// TODO(lab01): hint\n// ANCHOR: solution\nx\n// ANCHOR_END: solution\n");
        assert_eq!(errs[0].0, 2);
    }

    #[test]
    fn unclosed_region_is_an_error() {
        let errs = error_lines("// TODO(lab02): x\n// ANCHOR: solution\nx\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, 2);
        assert!(errs[0].1.contains("never closed"));
    }

    #[test]
    fn end_without_start_is_an_error() {
        let errs = error_lines("x\n// ANCHOR_END: solution => y\n");
        assert_eq!(
            errs,
            vec![(2, "`ANCHOR_END: solution` without a matching `ANCHOR: solution`".to_owned())]
        );
    }

    #[test]
    fn nested_region_is_an_error() {
        let src = "// TODO(lab02): x\n// ANCHOR: solution\n// ANCHOR: solution\nx\n// ANCHOR_END: solution\n";
        let errs = error_lines(src);
        assert_eq!(errs[0].0, 3);
        assert!(errs[0].1.contains("nested"));
    }

    #[test]
    fn named_anchor_inside_a_region_is_an_error() {
        let src = "// TODO(lab02): x\n// ANCHOR: solution\n// ANCHOR: part\nx\n// ANCHOR_END: part\n// ANCHOR_END: solution\n";
        let errs = error_lines(src);
        assert_eq!(errs.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 5]);
        assert!(errs[0].1.contains("`part`"), "{}", errs[0].1);
    }

    #[test]
    fn text_after_end_marker_must_be_an_arrow() {
        let errs =
            error_lines("// TODO(lab02): x\n// ANCHOR: solution\nx\n// ANCHOR_END: solution todo!()\n");
        assert_eq!(errs[0].0, 4);
        let errs = error_lines("// TODO(lab02): x\n// ANCHOR: solution\nx\n// ANCHOR_END: solution =>\n");
        assert!(errs[0].1.contains("nothing after"));
    }

    #[test]
    fn similar_anchor_names_are_not_solution_markers() {
        let src = "// ANCHOR: solution-notes\nx\n// ANCHOR_END: solution-notes\n";
        assert_eq!(strip(src).unwrap().regions, 0);
    }

    #[test]
    fn allow_unused_goes_after_the_leading_doc_comment() {
        let out = allow_unused("//! Lab 02.\n//!\n//! More.\n\npub mod a;\n");
        assert_eq!(
            out,
            "//! Lab 02.\n//!\n//! More.\n#![allow(unused)] // starter: code still to write leaves items unused\n\npub mod a;\n"
        );
        assert!(allow_unused("pub mod a;\n").starts_with("#![allow(unused)]"));
    }
}
