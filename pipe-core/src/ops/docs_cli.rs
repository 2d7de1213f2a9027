//! `completions SHELL` and `man`, for each binary: its shell completions
//! (clap_complete) and its man page in roff (clap_mangen), made from the
//! same clap definition it parses its command line with, so they cannot
//! drift from the options they describe.

use std::io::Write;

/// The shells completions are made for.
pub use clap_complete::Shell;

/// What `completions` takes.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// What `man` takes.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write a page for the binary and one for each subcommand
    /// (`NAME.1`, `NAME-SUBCOMMAND.1`) into this directory instead of the
    /// binary's page to standard output.
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
}

/// The two subcommands every binary has (flattened into its own).
#[derive(Debug, clap::Subcommand)]
pub enum DocsCommand {
    /// Prints shell completions for this binary (bash, zsh, fish, elvish,
    /// powershell), e.g. `pipe-server completions bash >
    /// /etc/bash_completion.d/pipe-server`.
    Completions(CompletionsArgs),
    /// Prints this binary's man page (roff), or writes a page for it and
    /// each subcommand into --out DIR.
    Man(ManArgs),
}

/// Runs `docs` for the binary whose command line `command` defines,
/// writing to standard output.
pub fn run(command: clap::Command, docs: &DocsCommand) -> std::io::Result<()> {
    let mut out = std::io::stdout();
    match docs {
        DocsCommand::Completions(args) => {
            completions(command, args.shell, &mut out);
            Ok(())
        }
        DocsCommand::Man(args) => man(command, args, &mut out),
    }
}

/// Writes `command`'s completions for `shell` to `out`.
pub fn completions(mut command: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, &mut command, name, out);
}

/// `command`'s man pages (section 1, roff): its own, then one for each
/// subcommand, named as `git` names its pages (`pipe-server-serve`).
pub fn man_pages(command: clap::Command) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let command = command.version(env!("CARGO_PKG_VERSION"));
    let mut pages = vec![(command.get_name().to_owned(), page(&command)?)];
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = format!("{}-{}", command.get_name(), sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .version(env!("CARGO_PKG_VERSION"));
        pages.push((name, page(&sub)?));
    }
    Ok(pages)
}

/// Runs `man`: the binary's page to `out`, or every page into a directory.
pub fn man(command: clap::Command, args: &ManArgs, out: &mut dyn Write) -> std::io::Result<()> {
    let pages = man_pages(command)?;
    match &args.out {
        None => out.write_all(&pages[0].1),
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for (name, page) in &pages {
                std::fs::write(dir.join(format!("{name}.1")), page)?;
            }
            Ok(())
        }
    }
}

fn page(command: &clap::Command) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> clap::Command {
        clap::Command::new("pipe-sample")
            .about("A sample")
            .subcommand(
                clap::Command::new("serve")
                    .about("Run it")
                    .arg(clap::Arg::new("listen").long("listen").help("Where")),
            )
    }

    #[test]
    fn completions_name_the_binary_and_its_subcommands() {
        let mut out = Vec::new();
        completions(sample(), Shell::Bash, &mut out);
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("pipe-sample"), "{script}");
        assert!(
            script.contains("serve") && script.contains("--listen"),
            "{script}"
        );
    }

    #[test]
    fn the_man_page_is_roff_with_every_subcommand_and_option() {
        let pages = man_pages(sample()).unwrap();
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["pipe-sample", "pipe-sample-serve"]);
        let main = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(main.contains(".TH") && main.contains("serve"), "{main}");
        let serve = String::from_utf8(pages[1].1.clone()).unwrap();
        assert!(serve.contains(".TH") && serve.contains("listen"), "{serve}");
    }
}
