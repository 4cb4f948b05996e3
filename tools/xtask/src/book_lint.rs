//! `xtask book-lint`: catch what mdBook lets through silently.
//!
//! mdBook renders an include whose anchor is missing as empty text, and keeps
//! broken relative links as they are. This linter checks, over every
//! `book/src/**/*.md`: includes (path, anchor, non-empty, no line numbers),
//! relative links and images (file, and heading id for `.md#fragment`, in
//! `SUMMARY.md` too), links that leave `book/src` (a problem unless they name
//! a file of the repository), the files listed in `SUMMARY.md`, and the
//! section order of the lab chapters.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

use anyhow::Result;
use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use regex::Regex;

/// The level-2 sections every lab chapter has, in this order (prefixes).
pub const LAB_SECTIONS: [&str; 6] =
    ["Purpose", "Concepts", "Steps", "Verification", "What the check", "Next"];
/// What a lab chapter that is not written yet contains.
pub const PLACEHOLDER: &str = "<!-- written with the lab code -->";

// mdBook's own patterns (mdbook::preprocess::links and mdbook::utils).
static LINK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?x)\\\{\{\#.*\}\}|\{\{\s*\#([a-zA-Z0-9_]+)\s+([^}]+)\}\}").expect("valid regex")
});
static ANCHOR_START: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"ANCHOR:\s*([\w_-]+)").expect("valid regex"));
static ANCHOR_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"ANCHOR_END:\s*([\w_-]+)").expect("valid regex"));
static HTML_URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?i)\b(?:src|href)\s*=\s*(?:"([^"]*)"|'([^']*)')"#).expect("valid regex"));
static SCHEME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z][a-zA-Z0-9+.-]*:").expect("valid regex"));

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Problem,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub severity: Severity,
    pub message: String,
}

// ---------------------------------------------------------------- anchors

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnchorError {
    /// No `ANCHOR: name` line.
    NoStart,
    /// `ANCHOR: name` on this 1-based line, but no `ANCHOR_END: name` after it.
    NoEnd(usize),
}

/// The text mdBook includes for `path:name`: the lines between the first
/// `ANCHOR: name` and the next `ANCHOR_END: name`, without any anchor line.
/// Unlike mdBook, a missing END is an error rather than "to the end of file".
pub fn anchor_text(content: &str, name: &str) -> Result<String, AnchorError> {
    let mut retained = Vec::new();
    let mut start = None;
    for (i, line) in content.lines().enumerate() {
        if start.is_some() {
            match ANCHOR_END.captures(line) {
                Some(cap) if &cap[1] == name => return Ok(retained.join("\n")),
                Some(_) => {}
                None if ANCHOR_START.is_match(line) => {}
                None => retained.push(line),
            }
        } else if ANCHOR_START.captures(line).is_some_and(|cap| &cap[1] == name) {
            start = Some(i + 1);
        }
    }
    Err(start.map_or(AnchorError::NoStart, AnchorError::NoEnd))
}

/// How many `ANCHOR: name` lines the file has (mdBook uses the first).
fn anchor_starts(content: &str, name: &str) -> usize {
    content.lines().filter(|l| ANCHOR_START.captures(l).is_some_and(|c| &c[1] == name)).count()
}

// ---------------------------------------------------------------- includes

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncludePart {
    Whole,
    Anchor(String),
    /// `path:10`, `path:10:20`, `path:10:`, `path::20`: rejected by policy.
    Lines(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub line: usize,
    pub kind: String,
    pub path: String,
    pub part: IncludePart,
}

/// Splits `path:rest` as mdBook does: a first part that is a number or empty
/// means a line range, anything else is an anchor name.
pub fn parse_include_arg(arg: &str) -> (String, IncludePart) {
    let Some((path, rest)) = arg.split_once(':') else {
        return (arg.to_owned(), IncludePart::Whole);
    };
    if rest.is_empty() {
        return (path.to_owned(), IncludePart::Whole);
    }
    let first = rest.split(':').next().unwrap_or("");
    if first.is_empty() || first.parse::<usize>().is_ok() {
        (path.to_owned(), IncludePart::Lines(rest.to_owned()))
    } else {
        (path.to_owned(), IncludePart::Anchor(first.to_owned()))
    }
}

/// Every `{{#include}}`, `{{#rustdoc_include}}` and `{{#playground}}` of a page.
pub fn directives(md: &str) -> Vec<Directive> {
    let lines = LineIndex::new(md);
    LINK.captures_iter(md)
        .filter_map(|cap| {
            let kind = cap.get(1)?.as_str();
            let first = cap.get(2)?.as_str().split_whitespace().next()?;
            let (path, part) = match kind {
                "include" | "rustdoc_include" => parse_include_arg(first),
                "playground" | "playpen" => (first.to_owned(), IncludePart::Whole),
                _ => return None,
            };
            Some(Directive { line: lines.line(cap.get(0)?.start()), kind: kind.to_owned(), path, part })
        })
        .collect()
}

// ---------------------------------------------------------------- headings

/// mdBook's `normalize_id`: lowercase, keep alphanumerics, `_` and `-`,
/// whitespace becomes `-`, everything else is dropped (checked against
/// mdBook 0.5: `## What's "new" — Überblick` → `whats-new--überblick`).
pub fn normalize_id(text: &str) -> String {
    let mut id = String::with_capacity(text.len());
    for c in text.trim().chars() {
        if c.is_alphanumeric() || c == '_' || c == '-' {
            id.extend(c.to_lowercase());
        } else if c.is_whitespace() {
            id.push('-');
        }
    }
    id
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heading {
    pub level: u8,
    pub text: String,
    pub id: String,
    pub line: usize,
}

fn markdown_options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_HEADING_ATTRIBUTES
}

/// The headings of a page with the ids mdBook gives them (a repeated id
/// gets `-1`, `-2`, …; `{#custom-id}` is used as it is).
pub fn headings(md: &str) -> Vec<Heading> {
    let lines = LineIndex::new(md);
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut current: Option<(u8, Option<String>, usize, String)> = None;
    for (event, range) in Parser::new_ext(md, markdown_options()).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, id, .. }) => {
                current =
                    Some((level as u8, id.map(|s| s.to_string()), lines.line(range.start), String::new()));
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, _, _, text)) = current.as_mut() {
                    text.push_str(&t);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some((_, _, _, text)) = current.as_mut() {
                    text.push(' ');
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, custom, line, text)) = current.take() {
                    let id = match custom {
                        Some(id) => id,
                        None => {
                            let base = normalize_id(&text);
                            let n = seen.entry(base.clone()).or_insert(0);
                            let id = if *n == 0 { base } else { format!("{base}-{n}") };
                            *n += 1;
                            id
                        }
                    };
                    out.push(Heading { level, text: text.trim().to_owned(), id, line });
                }
            }
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------- links

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRef {
    pub line: usize,
    pub target: String,
}

/// Markdown link and image targets, and `src`/`href` of inline HTML.
pub fn links(md: &str) -> Vec<LinkRef> {
    let lines = LineIndex::new(md);
    let mut out = Vec::new();
    for (event, range) in Parser::new_ext(md, markdown_options()).into_offset_iter() {
        match event {
            Event::Start(Tag::Link { dest_url, .. }) | Event::Start(Tag::Image { dest_url, .. }) => {
                out.push(LinkRef { line: lines.line(range.start), target: dest_url.to_string() });
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                for cap in HTML_URL.captures_iter(&html) {
                    let m = cap.get(1).or_else(|| cap.get(2)).expect("one alternative matched");
                    let line = lines.line(range.start) + html[..m.start()].matches('\n').count();
                    out.push(LinkRef { line, target: m.as_str().to_owned() });
                }
            }
            _ => {}
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn lexical_normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(text: &str) -> Self {
        Self(std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect())
    }
    /// The 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset)
    }
}

// ---------------------------------------------------------------- the linter

/// A lab chapter, relative to `book/src`: `lab*.md` anywhere, or `labs/NN-*.md`.
pub fn is_lab_chapter(rel: &Path) -> bool {
    let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let in_labs_dir = rel.parent().and_then(Path::file_name).is_some_and(|d| d == "labs");
    name.starts_with("lab") || (in_labs_dir && name.starts_with(|c: char| c.is_ascii_digit()))
}

pub struct Linter {
    root: PathBuf,
    src: PathBuf,
    strict: bool,
    findings: Vec<Finding>,
    headings: HashMap<PathBuf, Vec<Heading>>,
    /// The repository's files (tracked, or untracked but not ignored),
    /// relative to `root`; `None` when git cannot list them.
    repo_files: Option<Option<BTreeSet<PathBuf>>>,
}

impl Linter {
    pub fn new(root: &Path, strict: bool) -> Self {
        Self {
            root: root.to_path_buf(),
            src: root.join("book/src"),
            strict,
            findings: Vec::new(),
            headings: HashMap::new(),
            repo_files: None,
        }
    }

    fn rel(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.root).unwrap_or(path).to_path_buf()
    }

    fn report(&mut self, file: &Path, line: usize, severity: Severity, message: impl Into<String>) {
        let file = self.rel(file);
        self.findings.push(Finding { file, line, severity, message: message.into() });
    }

    fn problem(&mut self, file: &Path, line: usize, message: impl Into<String>) {
        self.report(file, line, Severity::Problem, message);
    }

    fn warn(&mut self, file: &Path, line: usize, message: impl Into<String>) {
        self.report(file, line, Severity::Warning, message);
    }

    /// Where a link that leaves book/src may point: to a file of the
    /// repository. Outside the repository, or to what git ignores (build
    /// output such as `target/`), the link works on one machine only.
    fn repo_file(&mut self, file: &Path) -> Result<(), String> {
        let Ok(rel) = file.strip_prefix(&self.root) else {
            return Err(format!("{} is outside the repository", file.display()));
        };
        let rel = rel.to_path_buf();
        let root = self.root.clone();
        let files = self.repo_files.get_or_insert_with(|| git_files(&root));
        match files {
            // Without git (a copy of the sources), existing under root is all we can ask.
            None => Ok(()),
            Some(files) if files.contains(&rel) || files.iter().any(|f| f.starts_with(&rel)) => Ok(()),
            Some(_) => Err(format!("{} is not a file of the repository (git ignores it)", rel.display())),
        }
    }

    fn headings_of(&mut self, md: &Path) -> Option<&[Heading]> {
        if !self.headings.contains_key(md) {
            let text = std::fs::read_to_string(md).ok()?;
            self.headings.insert(md.to_path_buf(), headings(&text));
        }
        self.headings.get(md).map(Vec::as_slice)
    }

    /// Lints the whole book; the findings are sorted by file and line.
    pub fn run(mut self) -> Vec<Finding> {
        if !self.src.is_dir() {
            let src = self.src.clone();
            self.problem(&src, 0, "no book sources here");
            return self.findings;
        }
        let mut pages: Vec<PathBuf> = walkdir::WalkDir::new(&self.src)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "md"))
            .map(|e| e.into_path())
            .collect();
        pages.sort();

        let summary = self.src.join("SUMMARY.md");
        let mut listed = BTreeSet::new();
        let mut included = BTreeSet::new();
        if summary.is_file() {
            listed = self.lint_summary(&summary);
        } else {
            self.problem(&summary, 0, "SUMMARY.md is missing");
        }
        for page in &pages {
            let Ok(text) = std::fs::read_to_string(page) else {
                self.problem(page, 0, "cannot read this file as UTF-8");
                continue;
            };
            included.extend(self.lint_directives(page, &text));
            if *page != summary {
                self.lint_links(page, &text);
            }
            if is_lab_chapter(page.strip_prefix(&self.src).unwrap_or(page)) {
                self.lint_lab_chapter(page, &text);
            }
        }
        for page in &pages {
            if *page != summary && !listed.contains(page) && !included.contains(page) {
                self.warn(
                    page,
                    0,
                    "not listed in SUMMARY.md nor included by a page: mdBook does not render it",
                );
            }
        }
        self.findings.sort();
        self.findings
    }

    /// Checks the chapter files of SUMMARY.md exist; returns them.
    fn lint_summary(&mut self, summary: &Path) -> BTreeSet<PathBuf> {
        let text = std::fs::read_to_string(summary).unwrap_or_default();
        let mut listed = BTreeSet::new();
        for link in links(&text) {
            if link.target.is_empty() || SCHEME.is_match(&link.target) {
                continue; // a draft chapter `[Title]()`, or an external link
            }
            let (path, fragment) = match link.target.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (link.target.as_str(), None),
            };
            let path = percent_decode(path);
            let file = lexical_normalize(&self.src.join(&path));
            if !file.is_file() {
                self.problem(summary, link.line, format!("SUMMARY.md lists `{path}`, which does not exist"));
                continue;
            }
            if !file.starts_with(&self.src) {
                // mdBook renders chapters from book/src only.
                self.problem(
                    summary,
                    link.line,
                    format!("SUMMARY.md lists `{path}`, outside book/src: a chapter must live in book/src"),
                );
                continue;
            }
            if let Some(frag) = fragment.filter(|f| !f.is_empty()) {
                self.check_fragment(summary, link.line, &file, frag, &link.target);
            }
            listed.insert(file);
        }
        listed
    }

    /// Checks the includes of a page; returns the `.md` files it includes.
    fn lint_directives(&mut self, page: &Path, text: &str) -> Vec<PathBuf> {
        let dir = page.parent().unwrap_or(Path::new("."));
        let mut included = Vec::new();
        for d in directives(text) {
            let file = lexical_normalize(&dir.join(&d.path));
            let what = format!("{{{{#{} {}}}}}", d.kind, d.path);
            if !file.is_file() {
                self.problem(page, d.line, format!("{what}: {} does not exist", self.rel(&file).display()));
                continue;
            }
            if file.extension().is_some_and(|x| x == "md") {
                included.push(file.clone());
            }
            match d.part {
                // A shared page may be included whole; code only by anchor, so
                // the book shows a named, deliberate part of a file.
                IncludePart::Whole if file.extension().is_some_and(|x| x == "md") => {}
                IncludePart::Whole => self.problem(
                    page,
                    d.line,
                    format!(
                        "{what}: a whole file; the book includes code by anchor only \
                         (add `ANCHOR: name` / `ANCHOR_END: name` lines and write `{}:name`)",
                        d.path
                    ),
                ),
                IncludePart::Lines(range) => self.problem(
                    page,
                    d.line,
                    format!(
                        "{what}:{range}: include by line numbers; the book includes by anchor only \
                         (add `ANCHOR: name` / `ANCHOR_END: name` lines and write `{}:name`)",
                        d.path
                    ),
                ),
                IncludePart::Anchor(name) => {
                    let content = match std::fs::read(&file) {
                        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                        Err(e) => {
                            self.problem(page, d.line, format!("{what}: cannot read: {e}"));
                            continue;
                        }
                    };
                    let target = self.rel(&file).display().to_string();
                    match anchor_text(&content, &name) {
                        Err(AnchorError::NoStart) => self.problem(
                            page,
                            d.line,
                            format!("{what}:{name}: no `ANCHOR: {name}` in {target} (mdBook would include nothing)"),
                        ),
                        Err(AnchorError::NoEnd(at)) => self.problem(
                            page,
                            d.line,
                            format!("{what}:{name}: `ANCHOR: {name}` at {target}:{at} has no `ANCHOR_END: {name}`"),
                        ),
                        Ok(body) if body.trim().is_empty() => self.problem(
                            page,
                            d.line,
                            format!("{what}:{name}: anchor `{name}` in {target} is empty (mdBook would include nothing)"),
                        ),
                        Ok(_) => {
                            let n = anchor_starts(&content, &name);
                            if n > 1 {
                                self.problem(
                                    page,
                                    d.line,
                                    format!("{what}:{name}: `ANCHOR: {name}` appears {n} times in {target}; mdBook only includes the first"),
                                );
                            }
                        }
                    }
                }
            }
        }
        included
    }

    fn lint_links(&mut self, page: &Path, text: &str) {
        let dir = page.parent().unwrap_or(Path::new(".")).to_path_buf();
        for link in links(text) {
            let target = link.target.trim();
            if target.is_empty() || SCHEME.is_match(target) || target.starts_with("//") {
                continue;
            }
            let (path, fragment) = match target.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (target, None),
            };
            let path = percent_decode(path.split('?').next().unwrap_or(""));
            if path.is_empty() {
                if let Some(frag) = fragment {
                    self.check_fragment(page, link.line, page, frag, target);
                }
                continue;
            }
            let file = if let Some(abs) = path.strip_prefix('/') {
                lexical_normalize(&self.src.join(abs))
            } else {
                lexical_normalize(&dir.join(&path))
            };
            // mdBook turns `x.md` into `x.html`; a link written as `x.html` works too.
            let file = if !file.exists() && file.extension().is_some_and(|x| x == "html") {
                let md = file.with_extension("md");
                if md.is_file() { md } else { file }
            } else {
                file
            };
            if !file.exists() {
                self.problem(
                    page,
                    link.line,
                    format!("link `{target}`: {} does not exist", self.rel(&file).display()),
                );
                continue;
            }
            if !file.starts_with(&self.src) {
                match self.repo_file(&file) {
                    // On GitHub the link works; in the rendered book it does not.
                    Ok(()) => self.warn(
                        page,
                        link.line,
                        format!("link `{target}` leaves book/src: mdBook does not copy that file into the rendered book"),
                    ),
                    Err(why) => {
                        self.problem(page, link.line, format!("link `{target}` leaves book/src: {why}"));
                        continue;
                    }
                }
            }
            if let Some(frag) = fragment
                && !frag.is_empty()
                && file.extension().is_some_and(|x| x == "md")
            {
                self.check_fragment(page, link.line, &file, frag, target);
            }
        }
    }

    fn check_fragment(&mut self, page: &Path, line: usize, md: &Path, fragment: &str, target: &str) {
        let fragment = percent_decode(fragment);
        let Some(hs) = self.headings_of(md) else {
            return;
        };
        if hs.iter().any(|h| h.id == fragment) {
            return;
        }
        let mut ids: Vec<String> = hs.iter().map(|h| h.id.clone()).collect();
        ids.truncate(12);
        let md = self.rel(md).display().to_string();
        self.problem(
            page,
            line,
            format!(
                "link `{target}`: no heading with id `{fragment}` in {md} (ids there: {})",
                ids.join(", ")
            ),
        );
    }

    fn lint_lab_chapter(&mut self, page: &Path, text: &str) {
        if text.contains(PLACEHOLDER) {
            let msg = format!("lab chapter is still a placeholder (`{PLACEHOLDER}`)");
            if self.strict {
                self.problem(page, 1, msg);
            } else {
                self.warn(page, 1, format!("{msg}; --strict makes this a problem"));
            }
            return;
        }
        let h2: Vec<Heading> = headings(text).into_iter().filter(|h| h.level == 2).collect();
        let expected = LAB_SECTIONS.map(|s| format!("## {s}…")).join(", ");
        let starts = |h: &Heading, prefix: &str| h.text.to_lowercase().starts_with(&prefix.to_lowercase());
        let mut from = 0;
        let mut last_line = 1;
        for section in LAB_SECTIONS {
            match h2[from..].iter().position(|h| starts(h, section)) {
                Some(i) => {
                    last_line = h2[from + i].line;
                    from += i + 1;
                }
                None => {
                    let (line, msg) = match h2[..from].iter().find(|h| starts(h, section)) {
                        Some(h) => (
                            h.line,
                            format!("lab chapter: `## {}` is out of order; expected {expected}", h.text),
                        ),
                        None => (
                            last_line,
                            format!(
                                "lab chapter: no `## {section}…` section after line {last_line}; expected {expected}"
                            ),
                        ),
                    };
                    self.problem(page, line, msg);
                }
            }
        }
    }
}

/// `git ls-files` of the repository at `root`, or `None` without git.
fn git_files(root: &Path) -> Option<BTreeSet<PathBuf>> {
    let out = Command::new("git")
        .current_dir(root)
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        out.stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
            .collect(),
    )
}

/// Prints the findings; returns the number of problems.
pub fn print(findings: &[Finding]) -> usize {
    let mut problems = 0;
    let mut warnings = 0;
    for f in findings {
        let line = f.line.max(1);
        match f.severity {
            Severity::Problem => {
                problems += 1;
                println!("{}:{line}: {}", f.file.display(), f.message);
            }
            Severity::Warning => {
                warnings += 1;
                println!("{}:{line}: warning: {}", f.file.display(), f.message);
            }
        }
    }
    if warnings > 0 {
        println!("book-lint: {warnings} warnings");
    }
    println!("book-lint: {problems} problems");
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUST: &str = "\
// ANCHOR: outer
fn f() {
    // ANCHOR: inner
    let x = 1;
    // ANCHOR_END: inner
    // TODO(lab02): hint
    // ANCHOR: solution
    body();
    // ANCHOR_END: solution => todo!()
}
// ANCHOR_END: outer
// ANCHOR: empty

// ANCHOR_END: empty
// ANCHOR: only-markers
// ANCHOR: solution
// ANCHOR_END: solution
// ANCHOR_END: only-markers
// ANCHOR: open
x
";

    #[test]
    fn anchor_text_drops_every_anchor_line() {
        assert_eq!(
            anchor_text(RUST, "outer").unwrap(),
            "fn f() {\n    let x = 1;\n    // TODO(lab02): hint\n    body();\n}"
        );
        assert_eq!(anchor_text(RUST, "inner").unwrap(), "    let x = 1;");
    }

    #[test]
    fn anchor_text_reports_missing_start_and_end() {
        assert_eq!(anchor_text(RUST, "nope"), Err(AnchorError::NoStart));
        assert_eq!(anchor_text(RUST, "open"), Err(AnchorError::NoEnd(19)));
        // `out` is a prefix of `outer`, not the same anchor.
        assert_eq!(anchor_text(RUST, "out"), Err(AnchorError::NoStart));
    }

    #[test]
    fn anchors_of_blank_or_marker_only_lines_are_empty() {
        assert!(anchor_text(RUST, "empty").unwrap().trim().is_empty());
        assert!(anchor_text(RUST, "only-markers").unwrap().trim().is_empty());
    }

    #[test]
    fn anchors_work_in_yaml_and_shell() {
        let yaml = "a: 1\n# ANCHOR: storage-class\nkind: StorageClass\n#ANCHOR_END:storage-class\n";
        assert_eq!(anchor_text(yaml, "storage-class").unwrap(), "kind: StorageClass");
    }

    #[test]
    fn include_arguments_are_split_like_mdbook() {
        assert_eq!(parse_include_arg("a.rs"), ("a.rs".into(), IncludePart::Whole));
        assert_eq!(parse_include_arg("a.rs:probe"), ("a.rs".into(), IncludePart::Anchor("probe".into())));
        assert_eq!(
            parse_include_arg("a.rs:node_publish-1"),
            ("a.rs".into(), IncludePart::Anchor("node_publish-1".into()))
        );
        for lines in ["10", "10:20", "10:", ":20"] {
            assert_eq!(
                parse_include_arg(&format!("a.rs:{lines}")),
                ("a.rs".into(), IncludePart::Lines(lines.into()))
            );
        }
    }

    #[test]
    fn directives_are_found_with_their_lines_and_escapes_are_skipped() {
        let md = "# T\n\n```rust,ignore\n{{#include ../x.rs:probe}}\n```\n\\{{#include not/this.rs}}\n{{ #rustdoc_include y.rs:2:3 }}\n{{#title Hi}}\n";
        let ds = directives(md);
        assert_eq!(ds.len(), 2);
        assert_eq!((ds[0].line, ds[0].path.as_str()), (4, "../x.rs"));
        assert_eq!(ds[0].part, IncludePart::Anchor("probe".into()));
        assert_eq!((ds[1].line, ds[1].kind.as_str()), (7, "rustdoc_include"));
        assert_eq!(ds[1].part, IncludePart::Lines("2:3".into()));
    }

    #[test]
    fn heading_ids_follow_mdbook() {
        assert_eq!(normalize_id("What the check checks"), "what-the-check-checks");
        assert_eq!(normalize_id("Step 3: `CreateVolume` & friends!"), "step-3-createvolume--friends");
        assert_eq!(normalize_id("snake_case and-dash"), "snake_case-and-dash");
        assert_eq!(normalize_id("What's \"new\" — Überblick_x-y"), "whats-new--überblick_x-y");
    }

    #[test]
    fn headings_get_unique_ids_and_custom_ids() {
        let md = "# Lab 2: `CreateVolume`\n\n## Steps\n\ntext\n\n## Steps\n\n## Custom {#my-id}\n\n```text\n# not a heading\n```\n";
        let hs = headings(md);
        let ids: Vec<_> = hs.iter().map(|h| (h.level, h.id.as_str(), h.line)).collect();
        assert_eq!(
            ids,
            vec![(1, "lab-2-createvolume", 1), (2, "steps", 3), (2, "steps-1", 7), (2, "my-id", 9)]
        );
        assert_eq!(hs[0].text, "Lab 2: CreateVolume");
    }

    #[test]
    fn links_come_from_markdown_and_html_but_not_code() {
        let md = "See [a](a.md#x) and ![img](img/p.png).\n\n`[no](code.md)`\n\n<img src=\"b.svg\" alt=\"\">\n\n[ref]: c.md\n\nUse [ref].\n";
        let ls: Vec<_> = links(md).into_iter().map(|l| (l.line, l.target)).collect();
        assert_eq!(
            ls,
            vec![
                (1, "a.md#x".to_owned()),
                (1, "img/p.png".to_owned()),
                (5, "b.svg".to_owned()),
                (9, "c.md".to_owned())
            ]
        );
    }

    #[test]
    fn lab_chapters_are_recognised_by_name_or_folder() {
        for yes in ["lab01.md", "lab-identity.md", "labs/01-identity.md", "part/lab3.md"] {
            assert!(is_lab_chapter(Path::new(yes)), "{yes}");
        }
        for no in ["intro.md", "labs/overview.md", "intro/01-chain.md"] {
            assert!(!is_lab_chapter(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn percent_decoding_and_normalizing_paths() {
        assert_eq!(percent_decode("a%20b.md"), "a b.md");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(lexical_normalize(Path::new("book/src/../../labs/./x.rs")), PathBuf::from("labs/x.rs"));
    }

    fn lint_book(files: &[(&str, &str)], strict: bool) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!("book-lint-test-{}-{}", std::process::id(), files.len()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let findings = Linter::new(&dir, strict).run();
        std::fs::remove_dir_all(&dir).unwrap();
        findings
            .into_iter()
            .map(|f| {
                let tag = if f.severity == Severity::Warning { "warning: " } else { "" };
                format!("{}:{}: {tag}{}", f.file.display(), f.line, f.message)
            })
            .collect()
    }

    #[test]
    fn fragments_in_summary_are_checked_against_the_chapter_headings() {
        let found = lint_book(
            &[
                (
                    "book/src/SUMMARY.md",
                    "# Summary\n\n- [Intro](intro.md)\n- [Ok](intro.md#second-part)\n- [Bad](intro.md#third)\n",
                ),
                ("book/src/intro.md", "# Welcome\n\n## Second part\n"),
            ],
            false,
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with(
                "book/src/SUMMARY.md:5: link `intro.md#third`: no heading with id `third` in book/src/intro.md"
            ),
            "{found:#?}"
        );
    }

    #[test]
    fn a_summary_chapter_outside_book_src_is_a_problem() {
        let found = lint_book(
            &[("book/src/SUMMARY.md", "- [Readme](../../README.md)\n"), ("README.md", "# Readme\n")],
            false,
        );
        assert!(
            found.iter().any(|f| f
                .starts_with("book/src/SUMMARY.md:1: SUMMARY.md lists `../../README.md`, outside book/src")),
            "{found:#?}"
        );
    }

    #[test]
    fn fragments_into_other_pages_are_checked_with_their_ids() {
        let found = lint_book(
            &[
                ("book/src/SUMMARY.md", "- [A](a.md)\n- [B](sub/b.md)\n"),
                (
                    "book/src/a.md",
                    "# A\n\n[ok](sub/b.md#what-the-check-checks) [html](sub/b.html#step-2) [bad](sub/b.md#step-3)\n",
                ),
                ("book/src/sub/b.md", "# B\n\n## What the check checks\n\n## Step 2\n"),
            ],
            false,
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("link `sub/b.md#step-3`: no heading with id `step-3`"), "{found:#?}");
    }

    #[test]
    fn a_link_out_of_book_src_fails_unless_it_names_a_repository_file() {
        let dir = std::env::temp_dir().join(format!("book-lint-outside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("repo");
        for (path, text) in [
            ("book/src/SUMMARY.md", "- [A](a.md)\n"),
            (
                "book/src/a.md",
                "# A\n\n[repo file](../../labs/x.rs) [gone](../../labs/gone.rs) [outside](../../../elsewhere.txt)\n",
            ),
            ("labs/x.rs", "fn x() {}\n"),
        ] {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        // It exists, but outside the repository: still a problem.
        std::fs::write(dir.join("elsewhere.txt"), "x").unwrap();
        let found: Vec<(Severity, String)> =
            Linter::new(&root, false).run().into_iter().map(|f| (f.severity, f.message)).collect();
        std::fs::remove_dir_all(&dir).unwrap();

        let has =
            |severity: Severity, text: &str| found.iter().any(|(s, m)| *s == severity && m.contains(text));
        assert!(has(Severity::Warning, "link `../../labs/x.rs` leaves book/src"), "{found:#?}");
        assert!(has(Severity::Problem, "link `../../labs/gone.rs`"), "{found:#?}");
        assert!(
            has(Severity::Problem, "link `../../../elsewhere.txt` leaves book/src:")
                && found.iter().any(|(_, m)| m.contains("outside the repository")),
            "{found:#?}"
        );
        assert_eq!(found.len(), 3, "{found:#?}");
    }

    #[test]
    fn files_git_ignores_are_not_files_of_the_repository() {
        let dir = std::env::temp_dir().join(format!("book-lint-git-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("target")).unwrap();
        std::fs::create_dir_all(dir.join("labs")).unwrap();
        std::fs::write(dir.join(".gitignore"), "/target\n").unwrap();
        std::fs::write(dir.join("labs/x.rs"), "").unwrap();
        std::fs::write(dir.join("target/out.txt"), "").unwrap();
        let git_ok =
            Command::new("git").current_dir(&dir).args(["init", "-q"]).status().is_ok_and(|s| s.success());
        let mut linter = Linter::new(&dir, false);
        let results =
            (linter.repo_file(&dir.join("labs/x.rs")), linter.repo_file(&dir.join("target/out.txt")));
        let outside = linter.repo_file(Path::new("/etc/hostname"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(outside.unwrap_err().contains("outside the repository"));
        if !git_ok {
            println!("SKIP files_git_ignores_are_not_files_of_the_repository: git is not available");
            return;
        }
        assert_eq!(results.0, Ok(()));
        assert!(results.1.unwrap_err().contains("git ignores it"));
    }

    #[test]
    fn a_small_book_is_linted_end_to_end() {
        let lab = "# Lab 1\n\n## Purpose\n## Concepts\n## Steps\n\
                   {{#include ../../code/a.rs:probe}}\n{{#include ../../code/a.rs:gone}}\n{{#include ../../code/a.rs:3}}\n{{#include ../../code/a.rs}}\n\
                   ## What the check checks\n## Verification\n## Next\n[intro](intro.md#welcome) [bad](intro.md#nope) [self](#steps)\n";
        let found = lint_book(
            &[
                (
                    "book/src/SUMMARY.md",
                    "# Summary\n\n- [Intro](intro.md)\n- [Lab 1](lab01.md)\n- [Gone](gone.md)\n- [Draft]()\n",
                ),
                ("book/src/intro.md", "# Welcome\n\n![x](missing.png)\n"),
                ("book/src/lab01.md", lab),
                ("book/src/lab02.md", "# Lab 2\n\n<!-- written with the lab code -->\n"),
                ("code/a.rs", "// ANCHOR: probe\nfn probe() {}\n// ANCHOR_END: probe\n"),
            ],
            false,
        );
        let expected = [
            "book/src/SUMMARY.md:5: SUMMARY.md lists `gone.md`, which does not exist",
            "book/src/intro.md:3: link `missing.png`: book/src/missing.png does not exist",
            "book/src/lab01.md:7: {{#include ../../code/a.rs}}:gone: no `ANCHOR: gone` in code/a.rs (mdBook would include nothing)",
            "book/src/lab01.md:8: {{#include ../../code/a.rs}}:3: include by line numbers",
            "book/src/lab01.md:9: {{#include ../../code/a.rs}}: a whole file; the book includes code by anchor only",
            "book/src/lab01.md:10: lab chapter: `## What the check checks` is out of order",
            "book/src/lab01.md:13: link `intro.md#nope`: no heading with id `nope` in book/src/intro.md",
            "book/src/lab02.md:1: warning: lab chapter is still a placeholder",
            "book/src/lab02.md:0: warning: not listed in SUMMARY.md",
        ];
        for want in expected {
            assert!(found.iter().any(|f| f.starts_with(want)), "missing {want:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");

        let strict = lint_book(
            &[
                ("book/src/SUMMARY.md", "- [L](lab03.md)\n"),
                ("book/src/lab03.md", "# L\n<!-- written with the lab code -->\n"),
            ],
            true,
        );
        assert_eq!(strict.len(), 1);
        assert!(
            strict[0].starts_with("book/src/lab03.md:1: lab chapter is still a placeholder"),
            "{strict:?}"
        );
    }
}
