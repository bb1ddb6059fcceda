//! Settings kept in files that change while the daemon runs — `LINKEDIN_CLIENT_SECRET_FILE`,
//! `AMQP_PASSWORD_FILE`, `AMQP_URL_FILE` — so that rotating a credential is a file change, not a
//! restart. A Kubernetes Secret, a Docker secret or a Vault agent rewrites such a file in place, renames
//! a new one over it, or (Kubernetes) swaps the `..data` symlink of the mount's directory.
//!
//! A [`SecretFile`] holds the value in force and reads its file again when asked
//! ([`SecretFile::reread`]): the token provider before the token request that follows a refusal and
//! every few seconds ([`POLL_EVERY`]), the broker connector before every reconnect. Reading the path
//! again follows whatever symlinks lead to it, so the `..data` swap is seen like any rewrite;
//! comparing what was read with the value in force tells a change. A file that became unreadable,
//! empty or invalid keeps the last good value in force: the credential that works now is not given
//! up for a half-written file. What a read means is [`next`], a pure function of the state and the
//! read; the log says each change once — INFO "{what} reloaded from {path}", ERROR naming the setting
//! and the path — and never the value.
//!
//! Rejected: inotify (a crate and a watch of the mount's directory for what one small read every few
//! seconds does, and blind on some network file systems); and dropping the value when the file goes
//! bad (a rotation caught mid-write would stop a worker that works).

use crate::config::{Secret, read_one_line};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tracing::{error, info};

/// How often a file that nobody asks about otherwise (`LINKEDIN_CLIENT_SECRET_FILE`) is read again.
pub(crate) const POLL_EVERY: Duration = Duration::from_secs(2);

/// What one read of the file found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// Its text, without the trailing newline.
    Value(String),
    /// Nothing, or only a newline.
    Empty,
    /// It could not be read (why, in the operating system's words).
    Unreadable(String),
    /// Read, but not a usable value (why, never quoting it).
    Invalid(String),
}

/// The value in force, and the trouble last reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) value: Secret,
    /// Why the file could not be used at the last read; `None` while it can.
    pub(crate) trouble: Option<String>,
}

/// What a read changed, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Nothing to say.
    None,
    /// A new value is in force.
    Reloaded,
    /// The file is usable again and holds the value in force.
    Recovered,
    /// The file cannot be used (why); the last good value stays in force.
    Trouble(String),
}

/// What a read means: a new good value replaces the one in force; anything else keeps it. Trouble
/// is reported when it starts or changes, not at every read while it lasts.
pub(crate) fn next(state: &State, read: Read) -> (State, Change) {
    let trouble = match read {
        Read::Value(text) if text == state.value.expose() => {
            let change = if state.trouble.is_some() {
                Change::Recovered
            } else {
                Change::None
            };
            let state = State {
                value: state.value.clone(),
                trouble: None,
            };
            return (state, change);
        }
        Read::Value(text) => {
            let state = State {
                value: Secret::new(text),
                trouble: None,
            };
            return (state, Change::Reloaded);
        }
        Read::Empty => "it is empty".to_owned(),
        Read::Unreadable(why) => format!("it cannot be read ({why})"),
        Read::Invalid(why) => why,
    };
    let change = if state.trouble.as_deref() == Some(trouble.as_str()) {
        Change::None
    } else {
        Change::Trouble(trouble.clone())
    };
    let state = State {
        value: state.value.clone(),
        trouble: Some(trouble),
    };
    (state, change)
}

/// One setting kept in a file, with the last good value it held.
pub(crate) struct SecretFile {
    setting: &'static str,
    /// What the value is, for "… reloaded from …".
    what: &'static str,
    path: PathBuf,
    /// Whether a value read is usable; the reason why not, without quoting it.
    check: fn(&str) -> Result<(), String>,
    state: Mutex<State>,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile")
            .field("setting", &self.setting)
            .field("path", &self.path)
            .finish()
    }
}

fn any_value(_: &str) -> Result<(), String> {
    Ok(())
}

impl SecretFile {
    /// The file of `setting` at `path`, whose value (read and checked when the settings were)
    /// is `value`.
    pub(crate) fn new(
        setting: &'static str,
        what: &'static str,
        path: PathBuf,
        value: Secret,
    ) -> SecretFile {
        SecretFile {
            setting,
            what,
            path,
            check: any_value,
            state: Mutex::new(State {
                value,
                trouble: None,
            }),
        }
    }

    /// Values that fail `check` are kept out, like an empty file.
    pub(crate) fn checked_by(mut self, check: fn(&str) -> Result<(), String>) -> SecretFile {
        self.check = check;
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing can be left half-changed: a poisoned lock still holds a whole state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value in force.
    pub(crate) fn value(&self) -> Secret {
        self.state().value.clone()
    }

    /// Reads the file again and logs what changed; returns whether a new value is in force.
    pub(crate) fn reread(&self) -> bool {
        let read = match read_one_line(&self.path) {
            Ok(Some(text)) => match (self.check)(&text) {
                Ok(()) => Read::Value(text),
                Err(why) => Read::Invalid(why),
            },
            Ok(None) => Read::Empty,
            Err(error) => Read::Unreadable(error.to_string()),
        };
        let change = {
            let mut state = self.state();
            let (new, change) = next(&state, read);
            *state = new;
            change
        };
        let (setting, path) = (self.setting, self.path.display());
        match &change {
            Change::None => {}
            Change::Reloaded => info!(setting, path = %path, "{} reloaded from {path}", self.what),
            Change::Recovered => info!(
                setting,
                path = %path,
                "{setting} {path} can be used again; its value is the one in force."
            ),
            Change::Trouble(why) => error!(
                setting,
                path = %path,
                error = %why,
                "{setting} {path}: {why}; keeping the last good value."
            ),
        }
        change == Change::Reloaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SettingFiles;
    use proptest::prelude::*;

    fn state(value: &str, trouble: Option<&str>) -> State {
        State {
            value: Secret::new(value),
            trouble: trouble.map(str::to_owned),
        }
    }

    #[test]
    fn a_new_value_replaces_the_one_in_force_and_trouble_keeps_it() {
        let good = state("old", None);
        let (after, change) = next(&good, Read::Value("new".into()));
        assert_eq!((after, change), (state("new", None), Change::Reloaded));
        assert_eq!(
            next(&good, Read::Value("old".into())),
            (good.clone(), Change::None)
        );
        let (after, change) = next(&good, Read::Empty);
        assert_eq!(after, state("old", Some("it is empty")));
        assert_eq!(change, Change::Trouble("it is empty".into()));
        // The same trouble again says nothing; other trouble says so.
        assert_eq!(next(&after, Read::Empty).1, Change::None);
        let (gone, change) = next(&after, Read::Unreadable("No such file".into()));
        assert_eq!(gone.value, Secret::new("old"));
        assert_eq!(
            change,
            Change::Trouble("it cannot be read (No such file)".into())
        );
        assert_eq!(
            next(&gone, Read::Value("old".into())),
            (good.clone(), Change::Recovered)
        );
        assert_eq!(
            next(&gone, Read::Value("newer".into())),
            (state("newer", None), Change::Reloaded)
        );
        let (invalid, change) = next(&good, Read::Invalid("not an amqp:// URL".into()));
        assert_eq!(invalid.value, Secret::new("old"));
        assert_eq!(change, Change::Trouble("not an amqp:// URL".into()));
    }

    fn read() -> impl Strategy<Value = Read> {
        prop_oneof![
            // Digits, which no trouble text holds: a quoted value would show.
            "[0-9]{1,2}".prop_map(Read::Value),
            Just(Read::Empty),
            Just(Read::Unreadable("Permission denied".into())),
            Just(Read::Invalid("not usable".into())),
        ]
    }

    proptest! {
        /// Whatever the reads, the value in force is the last good one read (or the first value),
        /// a reload is reported exactly when it changes, and no report quotes a value.
        #[test]
        fn the_value_in_force_is_the_last_good_read(reads in proptest::collection::vec(read(), 0..30)) {
            let mut current = state("00", None);
            let mut last_good = "00".to_owned();
            for read in reads {
                if let Read::Value(text) = &read {
                    last_good = text.clone();
                }
                let before = current.value.clone();
                let (after, change) = next(&current, read);
                prop_assert_eq!(after.value.expose(), last_good.as_str());
                prop_assert_eq!(change == Change::Reloaded, after.value != before);
                if let Change::Trouble(why) = &change {
                    prop_assert!(!why.chars().any(|c| c.is_ascii_digit()), "{}", why);
                }
                current = after;
            }
        }
    }

    #[test]
    fn rereading_follows_renames_and_a_swapped_symlink_and_keeps_the_last_good_value() {
        let files = SettingFiles::new();
        // A Kubernetes Secret mount: the file is a symlink through `..data` to a timestamped dir.
        let first = files.path("..2026_01");
        std::fs::create_dir(&first).unwrap();
        std::fs::write(first.join("secret"), "one\n").unwrap();
        std::os::unix::fs::symlink("..2026_01", files.path("..data")).unwrap();
        std::os::unix::fs::symlink("..data/secret", files.path("secret")).unwrap();
        let file = SecretFile::new(
            "LINKEDIN_CLIENT_SECRET_FILE",
            "client secret",
            files.path("secret"),
            Secret::new("one"),
        );
        assert!(!file.reread());
        let second = files.path("..2026_02");
        std::fs::create_dir(&second).unwrap();
        std::fs::write(second.join("secret"), "two\n").unwrap();
        std::os::unix::fs::symlink("..2026_02", files.path("..data_tmp")).unwrap();
        std::fs::rename(files.path("..data_tmp"), files.path("..data")).unwrap();
        assert!(file.reread());
        assert_eq!(file.value(), Secret::new("two"));

        std::fs::write(second.join("secret"), "").unwrap();
        assert!(!file.reread());
        assert_eq!(file.value(), Secret::new("two"));
        std::fs::remove_dir_all(&second).unwrap();
        assert!(!file.reread());
        assert_eq!(file.value(), Secret::new("two"));

        let checked = SecretFile::new(
            "AMQP_URL_FILE",
            "broker URL",
            files.path("url"),
            Secret::new("amqp://a"),
        )
        .checked_by(|text| {
            text.starts_with("amqp://")
                .then_some(())
                .ok_or_else(|| "not amqp".to_owned())
        });
        files.write("url", "http://b\n");
        assert!(!checked.reread());
        assert_eq!(checked.value(), Secret::new("amqp://a"));
        files.write("url", "amqp://c\n");
        assert!(checked.reread());
        assert_eq!(checked.value(), Secret::new("amqp://c"));
        assert!(!format!("{checked:?}").contains("amqp://c"));
    }
}
