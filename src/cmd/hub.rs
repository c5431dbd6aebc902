//! Model arguments that name a Hugging Face Hub repository ("org/name") instead of a path:
//! resolved to a snapshot folder of the local Hugging Face cache, laid out as huggingface_hub
//! writes it (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, then
//! `models--org--name/snapshots/<revision>`, the revision that `refs/main` names).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The Hugging Face hub cache directory, by huggingface_hub's environment variables.
pub fn hub_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
}

/// Whether `s` reads as a repository id: `org/name` (optionally `@revision`), no path syntax.
pub fn looks_like_repo_id(s: &str) -> bool {
    let id = s.split_once('@').map_or(s, |(id, _)| id);
    let mut parts = id.split('/');
    let valid = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if valid(a) && valid(b))
}

/// `model` itself when it exists; else, for a repository id, its snapshot in the Hugging Face
/// cache.
pub fn resolve_model(model: &Path) -> anyhow::Result<PathBuf> {
    if model.exists() {
        return Ok(model.to_owned());
    }
    let text = model.to_string_lossy();
    if !looks_like_repo_id(&text) {
        bail!("{}: no such file or folder", model.display());
    }
    let (repo, revision) = match text.split_once('@') {
        Some((r, rev)) => (r.to_owned(), Some(rev.to_owned())),
        None => (text.into_owned(), None),
    };
    let cache = hub_cache_dir().context("no cache directory: set HF_HUB_CACHE or HF_HOME")?;
    if let Some(dir) = cached_snapshot(&cache, &repo, revision.as_deref())? {
        return Ok(dir);
    }
    download(&cache, &repo, revision.as_deref())
}

/// The cached snapshot of `repo` at `revision` (a commit hash or a ref; default "main").
pub fn cached_snapshot(
    cache: &Path,
    repo: &str,
    revision: Option<&str>,
) -> anyhow::Result<Option<PathBuf>> {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snapshots = root.join("snapshots");
    if !snapshots.is_dir() {
        return Ok(None);
    }
    let rev = revision.unwrap_or("main");
    let ref_file = root.join("refs").join(rev);
    let commit = match std::fs::read_to_string(&ref_file) {
        Ok(s) => s.trim().to_owned(),
        Err(_) => rev.to_owned(),
    };
    let dir = snapshots.join(&commit);
    if dir.is_dir() {
        return Ok(Some(dir));
    }
    // No ref recorded (a cache copied by hand): a single snapshot is unambiguous.
    if revision.is_none() {
        let all: Vec<PathBuf> = std::fs::read_dir(&snapshots)
            .with_context(|| snapshots.display().to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        match all.as_slice() {
            [one] => return Ok(Some(one.clone())),
            [] => {}
            _ => bail!(
                "{}: {} snapshots and no refs/main to choose one; name a revision as {repo}@<commit>",
                snapshots.display(),
                all.len()
            ),
        }
    }
    Ok(None)
}

fn download(cache: &Path, repo: &str, _revision: Option<&str>) -> anyhow::Result<PathBuf> {
    bail!(
        "{repo} is not a file or folder here, and the Hugging Face cache ({}) has no snapshot of it. \
         Download it first (`huggingface-cli download {repo}`, or set HF_HUB_CACHE / HF_HOME to the \
         cache that has it), or pass the model folder itself",
        cache.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_told_from_paths() {
        assert!(looks_like_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct"));
        assert!(looks_like_repo_id("org/name@abc123"));
        for p in [
            "model.gguf",
            "./org/name",
            "/abs/x",
            "a/b/c",
            "org/",
            "../x",
        ] {
            assert!(!looks_like_repo_id(p), "{p}");
        }
    }

    #[test]
    fn snapshots_resolve_through_refs_or_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("models--org--m");
        std::fs::create_dir_all(root.join("snapshots/c0ffee")).unwrap();
        let got = cached_snapshot(tmp.path(), "org/m", None).unwrap();
        assert_eq!(
            got,
            Some(root.join("snapshots/c0ffee")),
            "the only snapshot"
        );
        std::fs::create_dir_all(root.join("snapshots/beef")).unwrap();
        let e = cached_snapshot(tmp.path(), "org/m", None).unwrap_err();
        assert!(e.to_string().contains("org/m@<commit>"), "{e}");
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::write(root.join("refs/main"), "beef\n").unwrap();
        let got = cached_snapshot(tmp.path(), "org/m", None).unwrap();
        assert_eq!(got, Some(root.join("snapshots/beef")));
        let got = cached_snapshot(tmp.path(), "org/m", Some("c0ffee")).unwrap();
        assert_eq!(got, Some(root.join("snapshots/c0ffee")));
        assert_eq!(
            cached_snapshot(tmp.path(), "org/other", None).unwrap(),
            None
        );
    }
}
