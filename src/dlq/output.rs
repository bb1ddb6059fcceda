//! Where records and rows go: standard output or a file. A reader that went away (`| head`) ends the
//! walk quietly — what it did not read stays in the queue anyway — while any other write error is
//! one. A file can be forced to disk ([`Output::sync`]), which `export --delete` does before it acks.

use super::DlqError;
use super::table::Printer;
use std::fs::File;
use std::io::{BufWriter, Stdout, Write};
use std::path::Path;

enum Sink {
    Stdout(BufWriter<Stdout>),
    File(BufWriter<File>),
}

pub(crate) struct Output {
    sink: Sink,
    pub(crate) target: String,
    reader_gone: bool,
}

impl Output {
    pub(crate) fn stdout() -> Output {
        Output {
            sink: Sink::Stdout(BufWriter::new(std::io::stdout())),
            target: "standard output".into(),
            reader_gone: false,
        }
    }

    /// Creates (or truncates) a file.
    pub(crate) fn create(path: &Path) -> Result<Output, DlqError> {
        let file = File::create(path).map_err(|source| {
            DlqError::Usage(format!("cannot create {}: {source}", path.display()))
        })?;
        Ok(Output::file(file, path))
    }

    /// Creates a file for an archive whose dead letters are deleted: refuses to overwrite a file
    /// that holds anything, since that could be the only copy of an earlier archive.
    pub(crate) fn create_archive(path: &Path) -> Result<Output, DlqError> {
        if std::fs::metadata(path).is_ok_and(|meta| meta.len() > 0) {
            return Err(DlqError::Usage(format!(
                "{} already exists and is not empty; export --delete does not overwrite an archive (choose a new file)",
                path.display()
            )));
        }
        Output::create(path)
    }

    fn file(file: File, path: &Path) -> Output {
        Output {
            sink: Sink::File(BufWriter::new(file)),
            target: path.display().to_string(),
            reader_gone: false,
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match &mut self.sink {
            Sink::Stdout(writer) => writer,
            Sink::File(writer) => writer,
        }
    }

    /// Writes one line; `false` when nobody reads any more.
    pub(crate) fn line(&mut self, text: &str) -> Result<bool, DlqError> {
        match writeln!(self.writer(), "{text}") {
            Ok(()) => Ok(true),
            Err(error) => self.failed(error),
        }
    }

    /// Writes several lines; `false` when nobody reads any more.
    pub(crate) fn lines(&mut self, lines: &[String]) -> Result<bool, DlqError> {
        for line in lines {
            if !self.line(line)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Ends a table (the rows a [`Printer`] still holds back, or its header alone) and flushes.
    pub(crate) fn finish(&mut self, printer: Option<&mut Printer>) -> Result<bool, DlqError> {
        if let Some(printer) = printer {
            self.lines(&printer.finish())?;
        }
        self.flush()
    }

    pub(crate) fn flush(&mut self) -> Result<bool, DlqError> {
        match self.writer().flush() {
            Ok(()) => Ok(!self.reader_gone),
            Err(error) => self.failed(error),
        }
    }

    /// Flushes and, for a file, waits until what was written is on disk (fsync).
    pub(crate) fn sync(&mut self) -> Result<(), DlqError> {
        self.flush()?;
        if let Sink::File(writer) = &mut self.sink {
            writer
                .get_ref()
                .sync_data()
                .map_err(|source| DlqError::Output {
                    target: self.target.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    fn failed(&mut self, source: std::io::Error) -> Result<bool, DlqError> {
        if source.kind() == std::io::ErrorKind::BrokenPipe {
            self.reader_gone = true;
            return Ok(false);
        }
        Err(DlqError::Output {
            target: self.target.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_never_overwrites_a_file_that_holds_anything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        let mut output = Output::create_archive(&path).unwrap();
        assert!(output.lines(&["one".into(), "two".into()]).unwrap());
        output.sync().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        assert_eq!(output.target, path.display().to_string());
        let refused = Output::create_archive(&path).err().unwrap();
        assert!(
            refused.is_usage() && refused.to_string().contains("not empty"),
            "{refused}"
        );
        let plain = Output::create(&path);
        assert!(plain.is_ok(), "a plain export may overwrite");
        assert!(Output::create(&dir.path().join("no/such/dir/x")).is_err_and(|e| e.is_usage()));
    }
}
