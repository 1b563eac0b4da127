//! The interactive prompt: command lines read until EOF or `quit`.

use std::io::{BufRead, IsTerminal, Write};

use crate::session::Session;

/// Why the prompt could not run.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The line editor could not take the terminal.
    #[error("setting up the terminal: {0}")]
    Setup(rustyline::error::ReadlineError),
    /// Reading the terminal failed.
    #[error("reading the terminal: {0}")]
    Read(rustyline::error::ReadlineError),
}

/// Reads command lines from standard input until EOF or `quit`: with line
/// editing and history on a terminal, echoed after the prompt otherwise.
/// The statuses of single commands do not matter, as with the C client.
pub fn interactive<W: Write>(session: &mut Session<W>) -> Result<(), PromptError> {
    if std::io::stdin().is_terminal() {
        return edit_lines(session);
    }
    piped(session, std::io::stdin().lock());
    Ok(())
}

/// Runs the lines of `input` the way readline treats a pipe: it echoes the
/// prompt and each line, and at EOF the prompt once more, which the C client
/// then ends with a newline.
pub fn piped<W: Write>(session: &mut Session<W>, input: impl BufRead) {
    for line in input.lines() {
        let Ok(line) = line else { break };
        let echo = format!("{}{line}\n", session.prompt());
        session.print(echo.as_bytes());
        if session.run_line(&line).quit {
            return;
        }
    }
    let last = format!("{}\n", session.prompt());
    session.print(last.as_bytes());
}

/// The terminal prompt, with line editing and history.
fn edit_lines<W: Write>(session: &mut Session<W>) -> Result<(), PromptError> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new().map_err(PromptError::Setup)?;
    loop {
        match editor.readline(&session.prompt()) {
            Ok(line) => {
                if !line.is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if session.run_line(&line).quit {
                    return Ok(());
                }
            }
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => {
                println!();
                return Ok(());
            }
            Err(e) => return Err(PromptError::Read(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, Wait};
    use crate::locate::UmlDirs;
    use std::time::Duration;

    #[test]
    fn piped_lines_are_echoed_after_the_prompt_until_quit() {
        let client = Client::new(Wait::Timeout(Duration::from_secs(1))).unwrap();
        let mut session = Session::new(client, UmlDirs(Vec::new()), None, false, Vec::new());
        piped(
            &mut session,
            "mconsole-version\nquit\nmconsole-version\n".as_bytes(),
        );
        let out = String::from_utf8(session.into_output()).unwrap();
        assert_eq!(
            out,
            "([None]) mconsole-version\numl_mconsole client version 2\n([None]) quit\n"
        );
    }

    #[test]
    fn at_eof_the_prompt_is_printed_once_more() {
        let client = Client::new(Wait::Timeout(Duration::from_secs(1))).unwrap();
        let mut session = Session::new(client, UmlDirs(Vec::new()), None, false, Vec::new());
        piped(&mut session, "mconsole-version\n".as_bytes());
        let out = String::from_utf8(session.into_output()).unwrap();
        assert_eq!(
            out,
            "([None]) mconsole-version\numl_mconsole client version 2\n([None]) \n"
        );
    }
}
