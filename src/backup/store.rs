//! The bucket behind a backup: an `object_store` client for S3 or a local directory, and the
//! object operations the uploader and restore need. Uploads and downloads stream in pieces; no
//! whole LTX file is held in memory.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig, WriteMultipart};

use super::layout::{database_prefix, EpochMarker, ObjectName};
use super::BackupError;
use crate::ltx::{Header, Trailer, HEADER_LEN, TRAILER_LEN};

/// Objects up to this size are uploaded with one PUT; larger ones in parts of this size.
pub const PART_LEN: usize = 8 << 20;
/// How long one request may take before it is abandoned (and retried at the next interval).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a backup lives, as the configuration or `--from` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An S3 bucket (or an S3-compatible service).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
        /// The service URL; empty means AWS (or `AWS_ENDPOINT_URL`).
        endpoint: String,
        /// The region; empty means `AWS_REGION`, or `us-east-1`.
        region: String,
        /// Address the bucket in the path rather than the host name.
        force_path_style: bool,
    },
    /// A directory.
    Dir(std::path::PathBuf),
}

impl Location {
    /// Parses `s3://BUCKET/PREFIX` or `file:///DIR` (a bare path is a directory too).
    pub fn parse(url: &str, endpoint: &str) -> Result<Location, BackupError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BackupError::Url(format!("{url}: no bucket")));
            }
            Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
                endpoint: endpoint.to_string(),
                region: String::new(),
                force_path_style: !endpoint.is_empty(),
            })
        } else if let Some(dir) = url.strip_prefix("file://") {
            Ok(Location::Dir(dir.into()))
        } else if url.contains("://") {
            Err(BackupError::Url(format!(
                "{url}: expected s3://BUCKET/PREFIX or file:///DIR"
            )))
        } else {
            Ok(Location::Dir(url.into()))
        }
    }
}

/// One database's objects in the bucket.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// LTX objects, with their size in bytes and upload time (ms since the Unix epoch).
    pub objects: Vec<(ObjectName, u64, i64)>,
    /// Epoch markers.
    pub markers: Vec<EpochMarker>,
}

impl Listing {
    /// The object names alone.
    pub fn names(&self) -> Vec<ObjectName> {
        self.objects.iter().map(|(n, _, _)| *n).collect()
    }
}

/// A bucket (or directory) and the key prefix under it.
#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// For messages: `s3://bucket/prefix` or the directory.
    label: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

impl Remote {
    /// A client for `location`. S3 credentials come from the AWS environment variables, or the
    /// shared credentials file (see [`super::credentials`]).
    pub fn open(location: &Location) -> Result<Remote, BackupError> {
        match location {
            Location::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                force_path_style,
            } => {
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                let env_endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
                let endpoint = if endpoint.is_empty() {
                    env_endpoint
                } else {
                    endpoint.clone()
                };
                if !endpoint.is_empty() {
                    builder = builder.with_endpoint(&endpoint);
                }
                if !region.is_empty() {
                    builder = builder.with_region(region);
                } else if std::env::var_os("AWS_REGION").is_none()
                    && std::env::var_os("AWS_DEFAULT_REGION").is_none()
                {
                    builder = builder.with_region("us-east-1");
                }
                // A custom endpoint is addressed path-style (the bucket cannot be put in a host
                // name ltxd does not know); AWS itself virtual-hosted unless asked otherwise.
                let virtual_hosted = endpoint.is_empty() && !*force_path_style;
                builder = builder.with_virtual_hosted_style_request(virtual_hosted);
                if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                    if let Some(c) = super::credentials::from_shared_file() {
                        builder = builder
                            .with_access_key_id(c.access_key_id)
                            .with_secret_access_key(c.secret_access_key);
                        if let Some(token) = c.session_token {
                            builder = builder.with_token(token);
                        }
                    }
                }
                let store = builder
                    .with_client_options(
                        ClientOptions::new()
                            .with_allow_http(endpoint.starts_with("http://"))
                            .with_timeout(REQUEST_TIMEOUT)
                            .with_connect_timeout(Duration::from_secs(2)),
                    )
                    .with_retry(RetryConfig {
                        max_retries: 2,
                        retry_timeout: REQUEST_TIMEOUT,
                        ..RetryConfig::default()
                    })
                    .build()?;
                Ok(Remote {
                    store: Arc::new(store),
                    prefix: prefix.trim_matches('/').to_string(),
                    label: format!("s3://{bucket}/{prefix}"),
                })
            }
            Location::Dir(dir) => {
                crate::durable::create_dir_all(dir)?;
                Ok(Remote {
                    store: Arc::new(LocalFileSystem::new_with_prefix(dir)?),
                    prefix: String::new(),
                    label: dir.display().to_string(),
                })
            }
        }
    }

    fn db_prefix(&self, db: &str) -> String {
        database_prefix(&self.prefix, db)
    }

    /// The databases that have objects in the bucket.
    pub async fn databases(&self) -> Result<Vec<String>, BackupError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let listed = self.store.list_with_delimiter(prefix.as_ref()).await?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every object of database `db`.
    pub async fn list(&self, db: &str) -> Result<Listing, BackupError> {
        let prefix = self.db_prefix(db);
        let mut stream = self.store.list(Some(&ObjectPath::from(prefix.as_str())));
        let mut listing = Listing::default();
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            let key = meta.location.as_ref();
            let Some(relative) = key.strip_prefix(prefix.as_str()) else {
                continue;
            };
            if let Some(name) = ObjectName::parse(relative) {
                listing
                    .objects
                    .push((name, meta.size, meta.last_modified.timestamp_millis()));
            } else if let Some(marker) = EpochMarker::parse(relative) {
                listing.markers.push(marker);
            }
        }
        Ok(listing)
    }

    /// Writes an epoch marker.
    pub async fn put_marker(&self, db: &str, marker: EpochMarker) -> Result<(), BackupError> {
        let path = ObjectPath::from(marker.key(&self.db_prefix(db)));
        self.store.put(&path, PutPayload::new()).await?;
        Ok(())
    }

    /// Uploads `len` bytes of LTX from `data` as `name`, in pieces of [`PART_LEN`].
    pub async fn upload(
        &self,
        db: &str,
        name: ObjectName,
        len: u64,
        mut data: impl Read,
    ) -> Result<(), BackupError> {
        let path = ObjectPath::from(name.key(&self.db_prefix(db)));
        if len <= PART_LEN as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            data.read_to_end(&mut bytes)?;
            if bytes.len() as u64 != len {
                return Err(BackupError::ShortRead { name, len });
            }
            self.store.put(&path, bytes.into()).await?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_LEN);
        let mut buf = vec![0; 1 << 20];
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = data.read(&mut buf[..want])?;
            if n == 0 {
                writer.abort().await?;
                return Err(BackupError::ShortRead { name, len });
            }
            writer.wait_for_capacity(2).await?;
            writer.write(&buf[..n]);
            left -= n as u64;
        }
        writer.finish().await?;
        Ok(())
    }

    /// The header of object `name`.
    pub async fn header(&self, db: &str, name: ObjectName) -> Result<Header, BackupError> {
        let path = ObjectPath::from(name.key(&self.db_prefix(db)));
        let bytes = self.store.get_range(&path, 0..HEADER_LEN as u64).await?;
        let bytes: &[u8; HEADER_LEN] = bytes
            .as_ref()
            .try_into()
            .map_err(|_| BackupError::Truncated(name))?;
        Ok(Header::decode(bytes)?)
    }

    /// The trailer of object `name`, `size` bytes long.
    pub async fn trailer(
        &self,
        db: &str,
        name: ObjectName,
        size: u64,
    ) -> Result<Trailer, BackupError> {
        if size < (HEADER_LEN + TRAILER_LEN) as u64 {
            return Err(BackupError::Truncated(name));
        }
        let path = ObjectPath::from(name.key(&self.db_prefix(db)));
        let bytes = self
            .store
            .get_range(&path, size - TRAILER_LEN as u64..size)
            .await?;
        let bytes: &[u8; TRAILER_LEN] = bytes
            .as_ref()
            .try_into()
            .map_err(|_| BackupError::Truncated(name))?;
        Ok(Trailer::decode(bytes))
    }

    /// Streams object `name` into `out`; returns its length.
    pub async fn download(
        &self,
        db: &str,
        name: ObjectName,
        out: &mut impl Write,
    ) -> Result<u64, BackupError> {
        let path = ObjectPath::from(name.key(&self.db_prefix(db)));
        let mut stream = self.store.get(&path).await?.into_stream();
        let mut len = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            out.write_all(&chunk)?;
            len += chunk.len() as u64;
        }
        Ok(len)
    }

    /// Deletes object `name`.
    pub async fn delete(&self, db: &str, name: ObjectName) -> Result<(), BackupError> {
        let path = ObjectPath::from(name.key(&self.db_prefix(db)));
        self.store.delete(&path).await?;
        Ok(())
    }

    /// Downloads the objects of `plan` into `dir`, one file each, in order.
    pub async fn download_all(
        &self,
        db: &str,
        plan: &[ObjectName],
        dir: &Path,
    ) -> Result<Vec<std::path::PathBuf>, BackupError> {
        let mut files = Vec::with_capacity(plan.len());
        for (i, name) in plan.iter().enumerate() {
            let path = dir.join(format!("{i:08}.ltx"));
            let mut file =
                std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
            self.download(db, *name, &mut file).await?;
            file.flush()?;
            files.push(path);
        }
        Ok(files)
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}
