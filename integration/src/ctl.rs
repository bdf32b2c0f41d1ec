//! `tapwirectl`, the CLI, as a user runs it against one node's agent
//! (`tapwirectl --api SOCKET …`): plain commands, `apply -f FILE` and `apply -f -` with the
//! documents on standard input, and a reader for its calicoctl-style tables.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::lab::{binary, Lab};
use crate::process::CommandOutput;

/// How long one `tapwirectl` command may take.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(30);

/// `tapwirectl` pointed at one node's API socket.
#[derive(Debug, Clone)]
pub struct Tapwirectl<'lab> {
    lab: &'lab Lab,
    bin: PathBuf,
    api: PathBuf,
}

impl<'lab> Tapwirectl<'lab> {
    /// The CLI talking to the agent whose API socket is `api`.
    pub fn new(lab: &'lab Lab, api: &Path) -> Result<Tapwirectl<'lab>> {
        Ok(Tapwirectl {
            lab,
            bin: binary("tapwirectl")?,
            api: api.to_path_buf(),
        })
    }

    /// The API socket this CLI talks to.
    pub fn api(&self) -> &Path {
        &self.api
    }

    /// The command line a user would type for `args` (for transcripts).
    pub fn display(&self, args: &[&str]) -> String {
        format!("tapwirectl --api {} {}", self.api.display(), args.join(" "))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--api").arg(&self.api).args(args);
        // Plain tables, whatever the caller's terminal.
        cmd.env("NO_COLOR", "1");
        cmd
    }

    /// Runs `tapwirectl --api SOCKET ARGS…`, whatever its exit status.
    pub fn run(&self, args: &[&str]) -> Result<CommandOutput> {
        self.lab.run(self.command(args), None, CTL_TIMEOUT)
    }

    /// Runs it and returns its standard output; a non-zero exit is an error carrying what
    /// it printed.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        self.run(args)?.success()
    }

    /// Runs it with `input` on standard input (for `apply -f -`), whatever its exit status.
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Result<CommandOutput> {
        self.lab
            .run(self.command(args), Some(input.as_bytes()), CTL_TIMEOUT)
    }

    /// `tapwirectl apply -f -` with `documents` on standard input, whatever its exit status.
    pub fn apply(&self, documents: &str) -> Result<CommandOutput> {
        self.run_with_input(&["apply", "-f", "-"], documents)
    }

    /// `tapwirectl apply -f FILE`, whatever its exit status.
    pub fn apply_file(&self, file: &Path) -> Result<CommandOutput> {
        let file = file.display().to_string();
        self.run(&["apply", "-f", &file])
    }

    /// `tapwirectl get KIND [NAME] -o yaml`.
    pub fn get_yaml(&self, kind: &str, name: Option<&str>) -> Result<String> {
        let mut args = vec!["get", kind];
        args.extend(name);
        args.extend(["-o", "yaml"]);
        self.ok(&args)
    }

    /// `tapwirectl ARGS…` read as a table (see [`Table::parse`]).
    pub fn table(&self, args: &[&str]) -> Result<Table> {
        let text = self.ok(args)?;
        Table::parse(&text).ok_or_else(|| LabError::Parse {
            what: self.display(args),
            reason: "no table header".into(),
            output: text.clone(),
        })
    }
}

/// A calicoctl-style table: a header line of upper-case column names, then one row per
/// line, cells separated by runs of spaces (cells themselves hold no spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Finds the header (the first non-empty line whose words are all upper case) and
    /// splits the lines after it; `None` if there is no such line.
    pub fn parse(text: &str) -> Option<Table> {
        let mut lines = text.lines().skip_while(|l| !is_header(l));
        let header: Vec<String> = lines
            .next()?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let rows = lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect();
        Some(Table { header, rows })
    }

    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// The cell of `row` in column `name`.
    pub fn cell<'t>(&'t self, row: &'t [String], name: &str) -> Option<&'t str> {
        row.get(self.column(name)?).map(String::as_str)
    }

    /// The first row whose cell in column `name` is `value`.
    pub fn find(&self, name: &str, value: &str) -> Option<&Vec<String>> {
        let column = self.column(name)?;
        self.rows
            .iter()
            .find(|r| r.get(column).is_some_and(|c| c == value))
    }
}

fn is_header(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    !words.is_empty()
        && words.iter().all(|w| {
            w.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
        && words
            .iter()
            .any(|w| w.bytes().any(|b| b.is_ascii_uppercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calicoctl_style_tables_are_read() {
        let text = "WORKLOAD   NODE    NETWORKS       INTERFACE\n\
                    pod-a      node1   10.65.0.0/32   eth0\n\
                    pod-c      node2   10.65.0.64/32  eth0\n";
        let table = Table::parse(text).unwrap();
        assert_eq!(table.header, ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"]);
        let row = table.find("WORKLOAD", "pod-c").unwrap();
        assert_eq!(table.cell(row, "NODE"), Some("node2"));
        assert_eq!(table.cell(row, "NETWORKS"), Some("10.65.0.64/32"));
        assert!(table.find("WORKLOAD", "pod-x").is_none());
    }

    #[test]
    fn text_before_the_header_is_skipped() {
        let text = "Calico process is running.\n\nIPv4 BGP status\nPEER ADDRESS STATE\n";
        let table = Table::parse(text).unwrap();
        assert_eq!(table.header, ["PEER", "ADDRESS", "STATE"]);
        assert!(table.rows.is_empty());
        assert!(Table::parse("nothing here\n").is_none());
    }
}
