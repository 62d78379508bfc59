//! The two ways statements arrive from stdin: the prompt on a terminal (rustyline,
//! with history, completion and colours), and lines piped in (no banner, no prompt;
//! statements run as soon as they are complete, the first failing one stops the run).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor};

use super::helper::ReplHelper;
use super::input::{self, Statement};
use super::{Flow, ReplError, Session};

/// Where the history is kept: `$MDESNAP_HISTORY`, else `$XDG_STATE_HOME/mdesnap/history`
/// (an empty or relative `XDG_STATE_HOME` means `$HOME/.local/state`).
pub fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MDESNAP_HISTORY").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| dirs::home_dir().map(|h| h.join(".local").join("state")))?;
    Some(state.join("mdesnap").join("history"))
}

/// Whether to colour: stdout a terminal, `NO_COLOR` unset or empty, `TERM` not `dumb`.
fn use_color() -> bool {
    std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// Why the prompt could not run.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("the line editor failed: {0}")]
    Editor(#[from] ReadlineError),
}

/// The interactive prompt until `\q` or Ctrl-D. Errors of statements are printed and
/// the session goes on; Ctrl-C at the prompt clears the line. `guide` is printed
/// after the banner.
pub async fn prompt(session: &mut Session, guide: Option<&str>) -> Result<(), PromptError> {
    let config = Config::builder()
        .auto_add_history(false)
        .history_ignore_dups(true)?
        .max_history_size(10_000)?
        .completion_type(CompletionType::List)
        .build();
    let mut editor: Editor<ReplHelper, FileHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(ReplHelper::new(
        session.engine().tables(),
        columns(session).await,
        use_color(),
    )));
    let history = history_path();
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // A missing file is the first run; an unreadable one is reported, not fatal.
        if path.exists()
            && let Err(e) = editor.load_history(path)
        {
            eprintln!("warning: history {} not read: {e}", path.display());
        }
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", session.banner());
    if let Some(guide) = guide {
        let _ = writeln!(out, "{guide}");
    }
    let mut history_warned = false;
    loop {
        let line = tokio::task::block_in_place(|| editor.readline("mdesnap> "));
        let buffer = match line {
            Ok(b) => b,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        if input::is_blank(&buffer) {
            continue;
        }
        let _ = editor.add_history_entry(buffer.as_str());
        if let Some(path) = &history
            && let Err(e) = editor.append_history(path)
            && !history_warned
        {
            history_warned = true;
            eprintln!("warning: history not written to {}: {e}", path.display());
        }
        match session.run_text(&buffer, &mut out).await {
            Ok(Flow::Quit) => break,
            Ok(Flow::Continue) => {}
            Err(e) if e.is_interrupt() => eprintln!("cancelled"),
            Err(e) => eprintln!("error: {e}"),
        }
    }
    Ok(())
}

/// Every column name of the lake's tables, for completion.
async fn columns(session: &Session) -> Vec<String> {
    let mut out = Vec::new();
    for t in session.engine().tables() {
        if let Ok(df) = session.engine().context().table(t.as_str()).await {
            out.extend(df.schema().fields().iter().map(|f| f.name().clone()));
        }
    }
    out
}

/// Statements piped on stdin, each run as soon as it is complete; the first failing
/// one stops the run with its error. A statement left without its `;` at the end of
/// the input runs too.
pub async fn piped(session: &mut Session, out: &mut (dyn Write + Send)) -> Result<(), ReplError> {
    let stdin = std::io::stdin();
    let mut buffer = String::new();
    loop {
        let mut line = String::new();
        let read = tokio::task::block_in_place(|| stdin.lock().read_line(&mut line)).map_err(
            |source| ReplError::Read {
                path: PathBuf::from("<stdin>"),
                source,
            },
        )?;
        if read == 0 {
            break;
        }
        buffer.push_str(&line);
        let (statements, rest) = input::split(&buffer);
        for statement in &statements {
            if session.run(statement, out).await? == Flow::Quit {
                return Ok(());
            }
        }
        buffer = rest.to_string();
    }
    if !input::is_blank(&buffer) {
        session
            .run(&Statement::Sql(buffer.trim().to_string()), out)
            .await?;
    }
    Ok(())
}
