//! How deeply a migration file may nest, and the stack the analysis runs on.
//!
//! Rust drops syntax trees recursively, and the evaluator of migration literals
//! and sqlparser's parser recurse too: a 4 KB file of `X = - - … - 1` overflowed
//! a tokio worker's stack, which aborts the process (an overflow cannot be
//! caught). So, for Python: every file is measured by a non-recursive pass over
//! its tokens before it is parsed, and one nesting deeper than [`MAX_DEPTH`] is a
//! problem of that file; the trees of the files that are parsed are taken apart
//! without recursion (the parser's error recovery can nest deeper than the tokens
//! show); the evaluator stops at [`MAX_DEPTH`]. For SQL, a statement is measured
//! on sqlparser's own tokens before it is parsed. All of it runs on threads with
//! [`ANALYSIS_STACK_BYTES`] of stack, whoever asks.

/// The deepest nesting read, in the units of the token passes (an upper bound on
/// the syntax tree's depth: each bracket, each operator or keyword of a chain, each
/// block level counts one).
///
/// Why 200: Django's own migrations and the fixture project's measure 9 to 23
/// (class body, `operations = [`, the operation's call, `fields=[`, a field tuple,
/// the field's call, a dotted `on_delete`); of 12,600 Python files of the standard
/// library and site-packages, 99% measure under 31 and only generated formulas
/// (sympy's) exceed 200. CPython itself refuses more than 200 nested brackets. At
/// 200, the deepest recursion left (the evaluator, about 5 KB a level in a debug
/// build) needs about 1 MB: the tests read the deepest files let through on an
/// eighth of [`ANALYSIS_STACK_BYTES`].
pub(crate) const MAX_DEPTH: usize = 200;

/// Stack of the threads the analysis runs on: a known size, whatever thread asks
/// (a tokio worker has 2 MiB). Reserved, not committed: untouched pages cost nothing.
pub(crate) const ANALYSIS_STACK_BYTES: usize = 16 * 1024 * 1024;

/// The problem text for a file or statement nesting `depth` levels deep, the
/// levels being `counted` ("brackets, operators, blocks").
pub(crate) fn too_deep(depth: usize, counted: &str) -> String {
    format!(
        "nests {depth} levels deep ({counted}); dropguard reads at most {MAX_DEPTH}, so this is not analysed"
    )
}

/// Runs `work` on a thread with [`ANALYSIS_STACK_BYTES`] of stack and returns its
/// result; a panic in `work` is resumed in the caller, as if it had run there.
/// Fails only when the system refuses a thread.
pub(crate) fn on_analysis_stack<T: Send>(
    name: &str,
    work: impl FnOnce() -> T + Send,
) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .stack_size(ANALYSIS_STACK_BYTES)
            .spawn_scoped(scope, work)?;
        match handle.join() {
            Ok(result) => Ok(result),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// For tests: a tokio worker's stack, where the daemon used to analyse
/// migrations, and a way to run work on a stack that small.
#[cfg(test)]
pub(crate) mod test_stack {
    pub const WORKER_STACK: usize = 2 * 1024 * 1024;

    /// Runs `work` on a thread with `stack` bytes of stack.
    pub fn on_stack<T: Send + 'static>(
        stack: usize,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(work)
            .unwrap_or_else(|e| panic!("{e}"))
            .join()
            .unwrap_or_else(|_| panic!("panicked"))
    }
}
