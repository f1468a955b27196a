//! The vault beyond one machine: snapshots mirrored to an S3-compatible object store
//! through the `object_store` crate.
//!
//! The local vault stays the working copy: a snapshot is written and published
//! locally as always, then uploaded, data files first and `manifest.json` last, so
//! a snapshot without its manifest in the store is incomplete and never listed.
//! Instances that need a snapshot they do not hold (another instance took it)
//! download it into their local vault, again under `.tmp/` and published by rename,
//! and only then use it. Nothing here decides what a snapshot holds.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::{AsyncWriteExt, BufReader};

use super::fsutil;
use super::id::SnapshotId;
use super::manifest::{self, MANIFEST_FILE};
use super::store::{TMP_DIR, Vault};
use crate::config::EndpointUrl;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("vault.url {url:?} is not s3://bucket[/prefix]")]
    Url { url: String },
    /// `detail` is the client's error chain with the endpoint's credentials
    /// masked: object_store quotes the request URL, userinfo included.
    #[error("object store {url}: {what}: {detail}")]
    Store {
        url: String,
        what: String,
        detail: String,
    },
    #[error("local vault: {0}")]
    Local(#[from] super::VaultError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the mirror is and how to reach it.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// `s3://bucket/prefix`.
    pub url: String,
    /// A non-AWS endpoint (MinIO, Ceph, moto), or None for AWS.
    pub endpoint: Option<EndpointUrl>,
    pub region: String,
    /// Plain HTTP to the endpoint, for local test servers only.
    pub allow_http: bool,
}

/// An S3-compatible mirror of the vault.
#[derive(Debug, Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    /// For messages: the URL without credentials.
    url: String,
    /// The endpoint, whose credentials are masked in every error.
    endpoint: Option<EndpointUrl>,
}

impl Remote {
    /// Builds the client; credentials come from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, …).
    pub fn new(config: &RemoteConfig) -> Result<Self, RemoteError> {
        let rest = config
            .url
            .strip_prefix("s3://")
            .filter(|rest| !rest.is_empty())
            .ok_or_else(|| RemoteError::Url {
                url: config.url.clone(),
            })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint.expose());
        }
        let scrub = |text: String| match &config.endpoint {
            Some(endpoint) => endpoint.scrub(&text),
            None => text,
        };
        let store = builder.build().map_err(|source| RemoteError::Store {
            url: config.url.clone(),
            what: "configuring the client".into(),
            detail: scrub(crate::error_chain(&source)),
        })?;
        Ok(Self {
            store: Arc::new(store),
            prefix: StorePath::from(prefix.trim_matches('/')),
            url: config.url.clone(),
            endpoint: config.endpoint.clone(),
        })
    }

    /// An error's chain, the endpoint's credentials masked.
    fn detail(&self, err: &dyn std::error::Error) -> String {
        let text = crate::error_chain(err);
        match &self.endpoint {
            Some(endpoint) => endpoint.scrub(&text),
            None => text,
        }
    }

    fn key(&self, id: &SnapshotId, file: &str) -> StorePath {
        let mut parts: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        parts.push(id.to_string());
        parts.push(file.to_string());
        StorePath::from_iter(parts)
    }

    fn failed(&self, what: String) -> impl FnOnce(object_store::Error) -> RemoteError + '_ {
        move |source| RemoteError::Store {
            url: self.url.clone(),
            what,
            detail: self.detail(&source),
        }
    }

    /// Uploads a published local snapshot: data files, then the manifest.
    pub async fn upload(&self, vault: &Vault, id: &SnapshotId) -> Result<(), RemoteError> {
        let manifest = vault.show(id)?;
        let dir = vault.path().join(id.as_str());
        let files = manifest
            .objects
            .iter()
            .map(|o| o.file.clone())
            .chain(std::iter::once(MANIFEST_FILE.to_string()));
        for file in files {
            let path = dir.join(&file);
            let key = self.key(id, &file);
            let source = tokio::fs::File::open(&path)
                .await
                .map_err(|source| RemoteError::Io {
                    what: format!("opening {}", path.display()),
                    source,
                })?;
            // Multipart under the hood for large files: memory stays bounded.
            let mut writer = object_store::buffered::BufWriter::new(self.store.clone(), key);
            let copied = tokio::io::copy(&mut BufReader::new(source), &mut writer).await;
            let closed = match copied {
                Ok(_) => writer.shutdown().await,
                Err(err) => {
                    let _ = writer.abort().await;
                    Err(err)
                }
            };
            // The writer's error carries object_store's, request URL included.
            closed.map_err(|source| RemoteError::Store {
                url: self.url.clone(),
                what: format!("uploading {file} of snapshot {id}"),
                detail: self.detail(&source),
            })?;
        }
        tracing::info!(snapshot = %id, store = %self.url, "snapshot uploaded");
        Ok(())
    }

    /// Ids of the complete snapshots in the store (those with a manifest).
    pub async fn list(&self) -> Result<Vec<SnapshotId>, RemoteError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let listing = self
            .store
            .list_with_delimiter(prefix)
            .await
            .map_err(self.failed("listing snapshots".into()))?;
        let mut ids = Vec::new();
        for dir in listing.common_prefixes {
            let Some(Ok(id)) = dir.filename().map(SnapshotId::parse) else {
                continue;
            };
            match self.store.head(&self.key(&id, MANIFEST_FILE)).await {
                Ok(_) => ids.push(id),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(self.failed(format!("looking at snapshot {id}"))(err)),
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Brings every complete remote snapshot the local vault lacks into it.
    pub async fn fetch_missing(&self, vault: &Vault) -> Result<usize, RemoteError> {
        let local: Vec<SnapshotId> = vault.list()?.into_iter().map(|e| e.id).collect();
        let mut fetched = 0;
        for id in self.list().await? {
            if !local.contains(&id) {
                self.fetch(vault, &id).await?;
                fetched += 1;
            }
        }
        Ok(fetched)
    }

    /// Downloads one snapshot into `.tmp/` of the local vault, checks its
    /// manifest, then publishes it there by rename.
    async fn fetch(&self, vault: &Vault, id: &SnapshotId) -> Result<(), RemoteError> {
        let staging: PathBuf = vault.path().join(TMP_DIR).join(format!("fetch-{id}"));
        let _ = tokio::fs::remove_dir_all(&staging).await;
        fsutil::ensure_private_dir(&staging)?;
        let manifest_bytes = self.download_bytes(id, MANIFEST_FILE).await?;
        let manifest_path = staging.join(MANIFEST_FILE);
        let manifest = manifest::parse(id, &manifest_path, &manifest_bytes)?;
        for object in &manifest.objects {
            self.download_file(id, &object.file, &staging.join(&object.file))
                .await?;
        }
        write_private(&manifest_path, &manifest_bytes).await?;
        fsutil::sync_dir(&staging)?;
        let target = vault.path().join(id.as_str());
        tokio::fs::rename(&staging, &target)
            .await
            .map_err(|source| RemoteError::Io {
                what: format!("publishing fetched snapshot {id}"),
                source,
            })?;
        fsutil::sync_dir(vault.path())?;
        // Whatever arrived is checked like any local snapshot before it is used.
        let report = vault.verify(id)?;
        if !report.is_ok() {
            tracing::warn!(snapshot = %id, "fetched snapshot fails verification");
        }
        tracing::info!(snapshot = %id, store = %self.url, "snapshot fetched");
        Ok(())
    }

    async fn download_bytes(
        &self,
        id: &SnapshotId,
        file: &str,
    ) -> Result<bytes::Bytes, RemoteError> {
        let what = || format!("downloading {file} of snapshot {id}");
        self.store
            .get(&self.key(id, file))
            .await
            .map_err(self.failed(what()))?
            .bytes()
            .await
            .map_err(self.failed(what()))
    }

    async fn download_file(
        &self,
        id: &SnapshotId,
        file: &str,
        to: &std::path::Path,
    ) -> Result<(), RemoteError> {
        let what = || format!("downloading {file} of snapshot {id}");
        let mut stream = self
            .store
            .get(&self.key(id, file))
            .await
            .map_err(self.failed(what()))?
            .into_stream();
        let handle = fsutil::create_private_file(to)?;
        let mut out = tokio::fs::File::from_std(handle);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.failed(what()))?;
            out.write_all(&chunk)
                .await
                .map_err(|source| RemoteError::Io {
                    what: what(),
                    source,
                })?;
        }
        out.sync_all().await.map_err(|source| RemoteError::Io {
            what: what(),
            source,
        })?;
        Ok(())
    }
}

async fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), RemoteError> {
    let handle = fsutil::create_private_file(path)?;
    let mut out = tokio::fs::File::from_std(handle);
    let io = |source| RemoteError::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    out.write_all(bytes).await.map_err(io)?;
    out.sync_all().await.map_err(io)?;
    Ok(())
}
