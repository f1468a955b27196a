//! Configuration: the TOML file an operator writes, turned into a checked [`Config`].
//!
//! Loading happens in three steps, and every step reports all the problems it can
//! find instead of stopping at the first:
//! 1. `source`: read the file, parse the TOML, remember the line of every key, expand
//!    `${VAR}` in string values;
//! 2. serde: deserialize into the structs of this module, collecting every unknown key
//!    with its dotted path and line;
//! 3. `validate`: cross-field checks and path resolution (relative paths are relative
//!    to the config file's directory).
//!
//! This module never opens a socket or touches a database: it only reads the file and
//! looks at the paths it names.

mod secret;
mod source;
mod types;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use secret::{DatabaseUrl, EndpointUrl, Secret, SecretUrl};
pub use types::*;

/// The exit status of a command refused because of its configuration (EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

/// One thing wrong with a configuration file, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path (`detect.min_errors`, `logs.file[0].path`), empty for file-level problems.
    pub key: String,
    /// 1-based line of the key in the file, when the key appears in the file.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), self.line) {
            (true, Some(line)) if !self.message.contains(&format!("(line {line})")) => {
                write!(f, "line {line}: {}", self.message)
            }
            (true, _) => write!(f, "{}", self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.key, self.message),
            (false, None) => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "configuration {} has {n} problem{}",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// Reads, expands, deserializes and validates the configuration at `path`, taking
/// `${VAR}` values from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// [`load`] with the environment supplied by the caller (tests, `demo`).
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError {
        path: path.to_path_buf(),
        problems,
    };
    let text = read(path).map_err(|message| {
        fail(vec![Problem {
            key: String::new(),
            line: None,
            message,
        }])
    })?;
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
    parse(&text, &base_dir, env).map_err(fail)
}

/// The largest configuration file read. A real one is a few KB; this bound keeps
/// a path pointing at something else (a log, an image, `/dev/zero`) from eating
/// memory, and keeps loading fast.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// The text of the configuration file at `path`: a regular file of at most
/// [`MAX_CONFIG_BYTES`], UTF-8. Anything else (a directory, a FIFO, a device)
/// is refused at once, without reading from it, blocking on it, or reading it
/// until memory runs out.
fn read(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let shown = path.display();
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // Opening a FIFO for reading blocks until a writer comes; not with O_NONBLOCK,
    // which changes nothing for a regular file.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let cannot_read = |err: std::io::Error| match err.kind() {
        std::io::ErrorKind::NotFound => {
            format!("file not found: {shown}; pass --config FILE or set DROPGUARD_CONFIG")
        }
        _ => format!("cannot read {shown}: {err}"),
    };
    let file = options.open(path).map_err(cannot_read)?;
    let metadata = file.metadata().map_err(cannot_read)?;
    if !metadata.is_file() {
        return Err(format!(
            "{shown} is {}, not a regular file; point --config at the TOML file",
            file_kind(&metadata)
        ));
    }
    let too_big = |size: u64| {
        format!(
            "config {shown} is {size} bytes; dropguard reads at most {MAX_CONFIG_BYTES} (4 MiB): is it the configuration?"
        )
    };
    if metadata.len() > MAX_CONFIG_BYTES {
        return Err(too_big(metadata.len()));
    }
    let mut bytes = Vec::new();
    // Bounded even if the file grows while it is read.
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|err| {
        let at = err.utf8_error().valid_up_to();
        format!("{shown} is not UTF-8 text (byte {at}); save it as UTF-8")
    })
}

/// What a file that is not a regular one is, in words.
fn file_kind(metadata: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let kind = metadata.file_type();
        if kind.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if metadata.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// Parses configuration text; relative paths in it are resolved against `base_dir`.
pub fn parse(
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let doc = source::Document::parse(text, env)?;
    let mut config = doc.deserialize::<Config>()?;
    let problems = validate::validate(&mut config, base_dir, &doc);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

impl Config {
    /// The normalized configuration as TOML, every secret masked: what `check-config` prints.
    pub fn to_masked_toml(&self) -> String {
        // Serializing our own plain structs cannot fail; keep a readable fallback anyway.
        toml::to_string_pretty(self).unwrap_or_else(|err| format!("# cannot render: {err}\n"))
    }
}

#[cfg(test)]
mod tests;
