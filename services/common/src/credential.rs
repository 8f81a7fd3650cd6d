//! Settings that may come from a file: `X` or `X_FILE` (as the official
//! postgres and postgres-exporter images do), for credentials a Kubernetes
//! Secret volume delivers.
//!
//! A [`Setting::File`] is read again on every use (each broker or database
//! (re)connect), so a rotated Secret that the kubelet refreshes in the mounted
//! file is picked up without a restart. Parsing (`config::Env`) does
//! no I/O; this module reads the file and never puts its content into an
//! error, a log line or `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::secret::Secret;

/// Where a file-backed setting was configured: the `*_FILE` variable and its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingFile {
    /// The variable naming the file (e.g. `RABBITMQ_DEFAULT_PASS_FILE`).
    pub variable: &'static str,
    /// The file's path.
    pub path: PathBuf,
}

/// A value given directly in its variable, or read from the file named by
/// its `*_FILE` variable on every [`Setting::read`].
#[derive(Clone, PartialEq, Eq)]
pub enum Setting<T> {
    /// The variable's value (or the default).
    Value(T),
    /// Read from this file on every use.
    File(SettingFile),
}

/// Why a file-backed setting could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingFileError {
    /// The file could not be opened or read.
    #[error("cannot read {variable}={path}: {source}")]
    Read {
        /// The `*_FILE` variable.
        variable: &'static str,
        /// The file's path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty (after its trailing line break), or not UTF-8.
    #[error("{variable}={path} is empty or not UTF-8 text")]
    Unusable {
        /// The `*_FILE` variable.
        variable: &'static str,
        /// The file's path.
        path: String,
    },
}

impl SettingFileError {
    /// Error category for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        "CredentialFile"
    }
}

/// Reads a setting file: UTF-8 text without one trailing line break (`\n`
/// or `\r\n`, as `echo secret > file` leaves), not empty.
pub fn read_setting_file(file: &SettingFile) -> Result<String, SettingFileError> {
    let path = file.path.display().to_string();
    let bytes = std::fs::read(&file.path).map_err(|source| SettingFileError::Read {
        variable: file.variable,
        path: path.clone(),
        source,
    })?;
    let unusable = || SettingFileError::Unusable {
        variable: file.variable,
        path: path.clone(),
    };
    let mut text = String::from_utf8(bytes).map_err(|_| unusable())?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(unusable());
    }
    Ok(text)
}

impl<T: Clone + From<String>> Setting<T> {
    /// The current value: the variable's, or the file's content read now.
    pub fn read(&self) -> Result<T, SettingFileError> {
        match self {
            Self::Value(value) => Ok(value.clone()),
            Self::File(file) => read_setting_file(file).map(T::from),
        }
    }
}

impl<T> Setting<T> {
    /// A file-backed setting.
    pub fn file(variable: &'static str, path: impl AsRef<Path>) -> Self {
        Self::File(SettingFile {
            variable,
            path: path.as_ref().to_path_buf(),
        })
    }

    /// The file, when the setting is read from one.
    pub fn as_file(&self) -> Option<&SettingFile> {
        match self {
            Self::Value(_) => None,
            Self::File(file) => Some(file),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Setting<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(value) => value.fmt(f),
            Self::File(file) => write!(f, "file {}", file.path.display()),
        }
    }
}

impl fmt::Display for Setting<String> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(value) => f.write_str(value),
            Self::File(file) => write!(f, "<{}>", file.path.display()),
        }
    }
}

impl fmt::Display for Setting<Secret> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("***"),
            Self::File(file) => write!(f, "<{}>", file.path.display()),
        }
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}
