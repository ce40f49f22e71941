//! The engine database: `berth.db` with versioned schema migrations.
//!
//! Many `berth` processes may use it at once: the connection waits on a
//! busy database instead of failing, writes run in IMMEDIATE transactions
//! (so two writers never deadlock upgrading read locks), and WAL lets
//! readers go on while one writes. A row that makes a thing visible is
//! written only after the thing exists on disk; a process killed at any
//! point leaves either the old or the new state.

use berth_image::digest::Digest;
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path}: schema version {found} is newer than this berth knows ({known}); upgrade berth")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("database {path}: corrupt value in {what}: {value:?}")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        value: String,
    },
    #[error("no such image: {0}")]
    NoImage(String),
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse { name: String, id: String },
}

/// The schema, one entry per version; a database at version N runs the
/// entries after N, in order, in one transaction each.
const MIGRATIONS: &[&str] = &[
    // 1: images, tags and the layers and blobs they reference.
    "CREATE TABLE images (
        id TEXT PRIMARY KEY,            -- config digest (Docker's image ID)
        manifest_digest TEXT,           -- the manifest it came with, if any
        created TEXT NOT NULL,          -- from the config
        added INTEGER NOT NULL,         -- unix seconds when stored
        size INTEGER NOT NULL,          -- unpacked size of all layers
        os TEXT NOT NULL,
        architecture TEXT NOT NULL,
        parent TEXT                     -- image built from, when known
    );
    CREATE TABLE tags (
        reference TEXT PRIMARY KEY,     -- normalised: docker.io/library/busybox:latest
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
    );
    CREATE INDEX tags_by_image ON tags(image_id);
    CREATE TABLE layers (
        chain_id TEXT PRIMARY KEY,
        diff_id TEXT NOT NULL,
        parent TEXT,                    -- chain id of the layer below
        size INTEGER NOT NULL
    );
    CREATE TABLE image_layers (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        chain_id TEXT NOT NULL REFERENCES layers(chain_id),
        PRIMARY KEY (image_id, idx)
    );
    CREATE INDEX image_layers_by_chain ON image_layers(chain_id);
    CREATE TABLE image_blobs (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        PRIMARY KEY (image_id, digest)
    );
    CREATE INDEX image_blobs_by_digest ON image_blobs(digest);",
    // 2: layers found by diff ID (a layer's tar can be given back from any
    // unpacked copy of it).
    "CREATE INDEX layers_by_diff_id ON layers(diff_id);",
    // 3: containers.
    "CREATE TABLE containers (
        id TEXT PRIMARY KEY,            -- 64 hex digits
        name TEXT NOT NULL UNIQUE,      -- without Docker's leading /
        image_id TEXT NOT NULL,         -- the image it was created from
        image TEXT NOT NULL,            -- the image as the user named it
        config TEXT NOT NULL,           -- ContainerConfig, JSON
        command TEXT NOT NULL,          -- the resolved args, JSON array
        created TEXT NOT NULL,          -- RFC 3339, nanoseconds
        state TEXT NOT NULL,            -- created|running|paused|restarting|exited|dead|removing
        pid INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER NOT NULL DEFAULT 0,
        oom_killed INTEGER NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT '',
        started_at TEXT NOT NULL DEFAULT '',
        finished_at TEXT NOT NULL DEFAULT '',
        restart_count INTEGER NOT NULL DEFAULT 0,
        monitor_pid INTEGER NOT NULL DEFAULT 0,
        generation INTEGER NOT NULL DEFAULT 0  -- bumped by every start
    );
    CREATE INDEX containers_by_image ON containers(image_id);",
    // 4: volumes, and which containers mount them.
    "CREATE TABLE volumes (
        name TEXT PRIMARY KEY,
        driver TEXT NOT NULL,
        created TEXT NOT NULL,
        labels TEXT NOT NULL,           -- JSON object
        options TEXT NOT NULL,          -- JSON object
        anonymous INTEGER NOT NULL
    );
    CREATE TABLE container_volumes (
        container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        volume TEXT NOT NULL REFERENCES volumes(name),
        PRIMARY KEY (container_id, volume)
    );
    CREATE INDEX container_volumes_by_volume ON container_volumes(volume);",
    // 5: networks, the containers attached to them (with their leases while
    // they run) and published ports.
    "CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        driver TEXT NOT NULL,
        bridge TEXT NOT NULL UNIQUE,    -- the host's bridge interface
        subnet TEXT NOT NULL,
        gateway TEXT NOT NULL,
        ip_range TEXT,
        subnet6 TEXT,
        gateway6 TEXT,
        internal INTEGER NOT NULL,
        labels TEXT NOT NULL,           -- JSON object
        created TEXT NOT NULL
    );
    CREATE TABLE endpoints (
        container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        network_id TEXT NOT NULL REFERENCES networks(id),
        idx INTEGER NOT NULL,           -- eth<idx> inside the container
        aliases TEXT NOT NULL,          -- JSON array
        static_ip TEXT,                 -- --ip / --ip6 asked for
        static_ip6 TEXT,
        ip TEXT,                        -- the lease, while it runs
        ip6 TEXT,
        mac TEXT,
        PRIMARY KEY (container_id, network_id)
    );
    CREATE UNIQUE INDEX endpoints_ip ON endpoints(network_id, ip);
    CREATE UNIQUE INDEX endpoints_ip6 ON endpoints(network_id, ip6);
    CREATE INDEX endpoints_by_network ON endpoints(network_id);
    CREATE TABLE published_ports (
        container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        host_ip TEXT NOT NULL,          -- '' for every address
        host_port INTEGER NOT NULL,
        proto TEXT NOT NULL,
        container_port INTEGER NOT NULL,
        target TEXT NOT NULL,           -- the container's IPv4 address
        target6 TEXT,                   -- and its IPv6 one, if any
        PRIMARY KEY (host_port, proto, host_ip)
    );",
];

/// An image as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub id: Digest,
    pub manifest_digest: Option<Digest>,
    pub created: String,
    pub added: i64,
    pub size: u64,
    pub os: String,
    pub architecture: String,
    pub parent: Option<Digest>,
    /// Chain ids of its layers, bottom first.
    pub layers: Vec<Digest>,
    /// Blobs it references (manifest, config, compressed layers).
    pub blobs: Vec<Digest>,
    /// Its tags, normalised references.
    pub tags: Vec<String>,
}

/// A container as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub image: String,
    /// [`crate::config::ContainerConfig`] as JSON.
    pub config: String,
    pub command: Vec<String>,
    pub created: String,
    pub state: String,
    pub pid: i64,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    pub restart_count: i64,
    pub monitor_pid: i64,
    pub generation: i64,
}

/// A volume as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeRecord {
    pub name: String,
    pub driver: String,
    pub created: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub options: std::collections::BTreeMap<String, String>,
    pub anonymous: bool,
}

/// An unpacked layer as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    pub chain_id: Digest,
    pub diff_id: Digest,
    pub parent: Option<Digest>,
    pub size: u64,
}

pub struct Db {
    conn: Connection,
    path: PathBuf,
}

impl Db {
    /// Open (creating and migrating) `<dir>/berth.db`.
    pub fn open(dir: &Path) -> Result<Db, DbError> {
        let path = dir.join("berth.db");
        let err = |source| DbError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        // Every berth command is a short process and usually the only
        // connection, so SQLite's default close (checkpoint, fsync the
        // database, delete the WAL; the next open re-creates it and fsyncs
        // its header and the directory) cost several fsyncs per command.
        // The WAL stays instead and is checkpointed by whichever commit
        // finds it over 128 pages (512 KiB), which also bounds what an open
        // reads to rebuild the WAL index.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(err)?;
        conn.pragma_update(None, "wal_autocheckpoint", 128)
            .map_err(err)?;
        let mut db = Db { conn, path };
        db.migrate()?;
        Ok(db)
    }

    /// The connection, for the engine's modules that keep their own tables
    /// (networks).
    pub(crate) fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub(crate) fn conn_ref(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> DbError {
        DbError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// The schema version this berth writes.
    pub fn schema_version() -> i64 {
        MIGRATIONS.len() as i64
    }

    fn migrate(&mut self) -> Result<(), DbError> {
        let known = Self::schema_version();
        // The usual case, an up-to-date store, needs no write lock: every
        // berth command opens the database, and many run at once.
        let current: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if current == known {
            return Ok(());
        }
        loop {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| DbError::Sqlite {
                    path: self.path.clone(),
                    source: e,
                })?;
            let version: i64 = tx
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(|e| DbError::Sqlite {
                    path: self.path.clone(),
                    source: e,
                })?;
            if version > known {
                return Err(DbError::TooNew {
                    path: self.path.clone(),
                    found: version,
                    known,
                });
            }
            if version == known {
                return Ok(());
            }
            let sql = MIGRATIONS[version as usize];
            let res = tx
                .execute_batch(sql)
                .and_then(|()| tx.pragma_update(None, "user_version", version + 1))
                .and_then(|()| tx.commit());
            res.map_err(|e| DbError::Sqlite {
                path: self.path.clone(),
                source: e,
            })?;
        }
    }

    fn digest(&self, what: &'static str, s: String) -> Result<Digest, DbError> {
        s.parse().map_err(|_| DbError::Corrupt {
            path: self.path.clone(),
            what,
            value: s,
        })
    }

    /// Record an unpacked layer (after it exists on disk).
    pub fn put_layer(&self, l: &LayerRecord) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO layers (chain_id, diff_id, parent, size) VALUES (?1, ?2, ?3, ?4)",
                params![
                    l.chain_id.to_string(),
                    l.diff_id.to_string(),
                    l.parent.as_ref().map(Digest::to_string),
                    l.size as i64
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn layer(&self, chain_id: &Digest) -> Result<Option<LayerRecord>, DbError> {
        let row = self
            .conn
            .query_row(
                "SELECT diff_id, parent, size FROM layers WHERE chain_id = ?1",
                [chain_id.to_string()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|(diff, parent, size)| {
            Ok(LayerRecord {
                chain_id: chain_id.clone(),
                diff_id: self.digest("layers.diff_id", diff)?,
                parent: parent
                    .map(|p| self.digest("layers.parent", p))
                    .transpose()?,
                size: size as u64,
            })
        })
        .transpose()
    }

    /// Record an image with its layers, blobs and tags in one transaction
    /// (after its blobs and layers exist). Tags move from any other image.
    pub fn put_image(&mut self, img: &ImageRecord) -> Result<(), DbError> {
        let path = self.path.clone();
        let err = move |source| DbError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let id = img.id.to_string();
        tx.execute(
            "INSERT INTO images (id, manifest_digest, created, added, size, os, architecture, parent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(id) DO UPDATE SET manifest_digest = COALESCE(excluded.manifest_digest, manifest_digest)",
            params![
                id,
                img.manifest_digest.as_ref().map(Digest::to_string),
                img.created,
                img.added,
                img.size as i64,
                img.os,
                img.architecture,
                img.parent.as_ref().map(Digest::to_string)
            ],
        )
        .map_err(&err)?;
        tx.execute("DELETE FROM image_layers WHERE image_id = ?1", [&id])
            .map_err(&err)?;
        for (i, l) in img.layers.iter().enumerate() {
            tx.execute(
                "INSERT INTO image_layers (image_id, idx, chain_id) VALUES (?1, ?2, ?3)",
                params![id, i as i64, l.to_string()],
            )
            .map_err(&err)?;
        }
        for b in &img.blobs {
            tx.execute(
                "INSERT OR IGNORE INTO image_blobs (image_id, digest) VALUES (?1, ?2)",
                params![id, b.to_string()],
            )
            .map_err(&err)?;
        }
        for t in &img.tags {
            tx.execute(
                "INSERT INTO tags (reference, image_id) VALUES (?1, ?2)
                 ON CONFLICT(reference) DO UPDATE SET image_id = excluded.image_id",
                params![t, id],
            )
            .map_err(&err)?;
        }
        tx.commit().map_err(&err)
    }

    /// Point `reference` (normalised) at an image.
    pub fn tag(&self, reference: &str, id: &Digest) -> Result<(), DbError> {
        let n = self
            .conn
            .execute(
                "INSERT INTO tags (reference, image_id) SELECT ?1, id FROM images WHERE id = ?2
                 ON CONFLICT(reference) DO UPDATE SET image_id = excluded.image_id",
                params![reference, id.to_string()],
            )
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(DbError::NoImage(id.to_string()));
        }
        Ok(())
    }

    /// Remove a tag; returns whether it existed.
    pub fn untag(&self, reference: &str) -> Result<bool, DbError> {
        let n = self
            .conn
            .execute("DELETE FROM tags WHERE reference = ?1", [reference])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// The image a normalised reference points to.
    pub fn resolve_tag(&self, reference: &str) -> Result<Option<Digest>, DbError> {
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT image_id FROM tags WHERE reference = ?1",
                [reference],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        id.map(|s| self.digest("tags.image_id", s)).transpose()
    }

    /// Images whose ID's hex starts with `prefix` (for `rmi 1a2b3c`).
    pub fn images_by_prefix(&self, prefix: &str) -> Result<Vec<Digest>, DbError> {
        if !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM images WHERE substr(id, 8) LIKE ?1 || '%'")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([prefix.to_ascii_lowercase()], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(self.digest("images.id", r.map_err(|e| self.err(e))?)?);
        }
        Ok(out)
    }

    /// One image with its layers, blobs and tags.
    pub fn image(&self, id: &Digest) -> Result<Option<ImageRecord>, DbError> {
        let row = self
            .conn
            .query_row(
                "SELECT manifest_digest, created, added, size, os, architecture, parent FROM images WHERE id = ?1",
                [id.to_string()],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((manifest, created, added, size, os, architecture, parent)) = row else {
            return Ok(None);
        };
        let strings = |sql: &str| -> Result<Vec<String>, DbError> {
            let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([id.to_string()], |r| r.get::<_, String>(0))
                .map_err(|e| self.err(e))?;
            rows.map(|r| r.map_err(|e| self.err(e))).collect()
        };
        let layers = strings("SELECT chain_id FROM image_layers WHERE image_id = ?1 ORDER BY idx")?
            .into_iter()
            .map(|s| self.digest("image_layers.chain_id", s))
            .collect::<Result<_, _>>()?;
        let blobs = strings("SELECT digest FROM image_blobs WHERE image_id = ?1 ORDER BY digest")?
            .into_iter()
            .map(|s| self.digest("image_blobs.digest", s))
            .collect::<Result<_, _>>()?;
        let tags = strings("SELECT reference FROM tags WHERE image_id = ?1 ORDER BY reference")?;
        Ok(Some(ImageRecord {
            id: id.clone(),
            manifest_digest: manifest
                .map(|m| self.digest("images.manifest_digest", m))
                .transpose()?,
            created,
            added,
            size: size as u64,
            os,
            architecture,
            parent: parent
                .map(|p| self.digest("images.parent", p))
                .transpose()?,
            layers,
            blobs,
            tags,
        }))
    }

    /// Every image, newest first (as `docker images` lists them).
    pub fn images(&self) -> Result<Vec<ImageRecord>, DbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM images ORDER BY created DESC, added DESC")
            .map_err(|e| self.err(e))?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .map(|r| r.map_err(|e| self.err(e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for s in ids {
            let id = self.digest("images.id", s)?;
            if let Some(img) = self.image(&id)? {
                out.push(img);
            }
        }
        Ok(out)
    }

    /// Delete an image row with its tags and references (its blobs and
    /// layers stay until garbage collection finds them unreferenced).
    pub fn delete_image(&self, id: &Digest) -> Result<bool, DbError> {
        let n = self
            .conn
            .execute("DELETE FROM images WHERE id = ?1", [id.to_string()])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Layers no image references (and that are no other referenced
    /// layer's parent), for garbage collection.
    pub fn unreferenced_layers(&self) -> Result<Vec<Digest>, DbError> {
        let mut stmt = self
            .conn
            .prepare(
                "WITH RECURSIVE used(chain_id) AS (
                    SELECT chain_id FROM image_layers
                    UNION SELECT l.parent FROM layers l JOIN used u ON l.chain_id = u.chain_id
                      WHERE l.parent IS NOT NULL)
                 SELECT chain_id FROM layers WHERE chain_id NOT IN (SELECT chain_id FROM used)",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(self.digest("layers.chain_id", r.map_err(|e| self.err(e))?)?);
        }
        Ok(out)
    }

    /// Forget a layer row (after its directory is gone).
    pub fn delete_layer(&self, chain_id: &Digest) -> Result<(), DbError> {
        self.conn
            .execute(
                "DELETE FROM layers WHERE chain_id = ?1",
                [chain_id.to_string()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Whether any image references the blob.
    pub fn blob_referenced(&self, digest: &Digest) -> Result<bool, DbError> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM image_blobs WHERE digest = ?1",
                [digest.to_string()],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// The chain IDs of the unpacked layers whose diff ID is `diff_id`.
    pub fn layers_with_diff_id(&self, diff_id: &Digest) -> Result<Vec<Digest>, DbError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT chain_id FROM layers WHERE diff_id = ?1 ORDER BY chain_id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([diff_id.to_string()], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(self.digest("layers.chain_id", r.map_err(|e| self.err(e))?)?);
        }
        Ok(out)
    }

    /// Every layer row's chain ID.
    pub fn layer_ids(&self) -> Result<Vec<Digest>, DbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT chain_id FROM layers")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(self.digest("layers.chain_id", r.map_err(|e| self.err(e))?)?);
        }
        Ok(out)
    }

    /// Add a container; a name in use is [`DbError::NameInUse`].
    pub fn insert_container(&self, c: &ContainerRecord) -> Result<(), DbError> {
        let r = self.conn.execute(
            "INSERT INTO containers (id, name, image_id, image, config, command, created, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                c.id,
                c.name,
                c.image_id,
                c.image,
                c.config,
                serde_json::to_string(&c.command).unwrap_or_else(|_| "[]".into()),
                c.created,
                c.state
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation
                    && msg.contains("containers.name") =>
            {
                let holder = self
                    .container_by_name(&c.name)?
                    .map(|h| h.id)
                    .unwrap_or_default();
                Err(DbError::NameInUse {
                    name: c.name.clone(),
                    id: holder,
                })
            }
            Err(e) => Err(self.err(e)),
        }
    }

    const CONTAINER_COLUMNS: &'static str =
        "id, name, image_id, image, config, command, created, state, pid, exit_code,
         oom_killed, error, started_at, finished_at, restart_count, monitor_pid, generation";

    fn container_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContainerRecord> {
        let command: String = r.get(5)?;
        Ok(ContainerRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            image_id: r.get(2)?,
            image: r.get(3)?,
            config: r.get(4)?,
            command: serde_json::from_str(&command).unwrap_or_default(),
            created: r.get(6)?,
            state: r.get(7)?,
            pid: r.get(8)?,
            exit_code: r.get(9)?,
            oom_killed: r.get::<_, i64>(10)? != 0,
            error: r.get(11)?,
            started_at: r.get(12)?,
            finished_at: r.get(13)?,
            restart_count: r.get(14)?,
            monitor_pid: r.get(15)?,
            generation: r.get(16)?,
        })
    }

    fn containers_where(&self, clause: &str, arg: &str) -> Result<Vec<ContainerRecord>, DbError> {
        let sql = format!(
            "SELECT {} FROM containers {clause} ORDER BY created DESC, id",
            Self::CONTAINER_COLUMNS
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = if clause.contains("?1") {
            stmt.query_map([arg], Self::container_row)
        } else {
            stmt.query_map([], Self::container_row)
        }
        .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Every container, newest first.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, DbError> {
        self.containers_where("", "")
    }

    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>, DbError> {
        Ok(self.containers_where("WHERE id = ?1", id)?.pop())
    }

    pub fn container_by_name(&self, name: &str) -> Result<Option<ContainerRecord>, DbError> {
        Ok(self.containers_where("WHERE name = ?1", name)?.pop())
    }

    /// Containers whose ID starts with `prefix` (hex only).
    pub fn containers_by_prefix(&self, prefix: &str) -> Result<Vec<ContainerRecord>, DbError> {
        if !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Vec::new());
        }
        self.containers_where("WHERE id LIKE ?1 || '%'", prefix)
    }

    /// How many containers were made from the image.
    pub fn containers_using(&self, image_id: &str) -> Result<Vec<ContainerRecord>, DbError> {
        self.containers_where("WHERE image_id = ?1", image_id)
    }

    /// Write a container's run state (everything but its identity and
    /// configuration).
    pub fn update_container(&self, c: &ContainerRecord) -> Result<(), DbError> {
        self.conn
            .execute(
                "UPDATE containers SET state = ?2, pid = ?3, exit_code = ?4, oom_killed = ?5,
                 error = ?6, started_at = ?7, finished_at = ?8, restart_count = ?9,
                 monitor_pid = ?10, generation = ?11, name = ?12 WHERE id = ?1",
                params![
                    c.id,
                    c.state,
                    c.pid,
                    c.exit_code,
                    c.oom_killed as i64,
                    c.error,
                    c.started_at,
                    c.finished_at,
                    c.restart_count,
                    c.monitor_pid,
                    c.generation,
                    c.name
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Replace a container's configuration.
    pub fn set_container_config(&self, id: &str, config: &str) -> Result<(), DbError> {
        self.conn
            .execute(
                "UPDATE containers SET config = ?2 WHERE id = ?1",
                params![id, config],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forget a container.
    pub fn delete_container(&self, id: &str) -> Result<bool, DbError> {
        let n = self
            .conn
            .execute("DELETE FROM containers WHERE id = ?1", [id])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Add a volume; false if one of that name exists.
    pub fn insert_volume(&self, v: &VolumeRecord) -> Result<bool, DbError> {
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO volumes (name, driver, created, labels, options, anonymous)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    v.name,
                    v.driver,
                    v.created,
                    serde_json::to_string(&v.labels).unwrap_or_else(|_| "{}".into()),
                    serde_json::to_string(&v.options).unwrap_or_else(|_| "{}".into()),
                    v.anonymous as i64
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    pub fn volumes(&self) -> Result<Vec<VolumeRecord>, DbError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, driver, created, labels, options, anonymous FROM volumes ORDER BY name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let labels: String = r.get(3)?;
                let options: String = r.get(4)?;
                Ok(VolumeRecord {
                    name: r.get(0)?,
                    driver: r.get(1)?,
                    created: r.get(2)?,
                    labels: serde_json::from_str(&labels).unwrap_or_default(),
                    options: serde_json::from_str(&options).unwrap_or_default(),
                    anonymous: r.get::<_, i64>(5)? != 0,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    pub fn volume(&self, name: &str) -> Result<Option<VolumeRecord>, DbError> {
        Ok(self.volumes()?.into_iter().find(|v| v.name == name))
    }

    pub fn delete_volume(&self, name: &str) -> Result<bool, DbError> {
        let n = self
            .conn
            .execute("DELETE FROM volumes WHERE name = ?1", [name])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Record that a container mounts a volume.
    pub fn use_volume(&self, container_id: &str, volume: &str) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO container_volumes (container_id, volume) VALUES (?1, ?2)",
                params![container_id, volume],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The containers that mount a volume.
    pub fn volume_users(&self, volume: &str) -> Result<Vec<String>, DbError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT container_id FROM container_volumes WHERE volume = ?1 ORDER BY container_id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([volume], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Whether the layer is known.
    pub fn has_layer(&self, chain_id: &Digest) -> Result<bool, DbError> {
        Ok(self.layer(chain_id)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u32) -> Digest {
        Digest::sha256_of(&n.to_le_bytes())
    }

    fn image(id: u32, layers: &[Digest], tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: d(id),
            manifest_digest: Some(d(id + 100)),
            created: format!("2026-01-0{}T00:00:00Z", id % 9 + 1),
            added: 1,
            size: 10,
            os: "linux".into(),
            architecture: "amd64".into(),
            parent: None,
            layers: layers.to_vec(),
            blobs: vec![d(id + 100), d(id + 50)],
            tags: tags.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn images_tags_layers_and_gc() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path()).unwrap();
        let (l1, l2, l3) = (d(1), d(2), d(3));
        for (c, p) in [
            (&l1, None),
            (&l2, Some(l1.clone())),
            (&l3, Some(l1.clone())),
        ] {
            db.put_layer(&LayerRecord {
                chain_id: c.clone(),
                diff_id: c.clone(),
                parent: p,
                size: 1,
            })
            .unwrap();
        }
        db.put_image(&image(
            1,
            &[l1.clone(), l2.clone()],
            &["docker.io/library/a:latest"],
        ))
        .unwrap();
        db.put_image(&image(
            2,
            &[l1.clone(), l3.clone()],
            &["docker.io/library/b:latest"],
        ))
        .unwrap();
        assert_eq!(
            db.resolve_tag("docker.io/library/a:latest").unwrap(),
            Some(d(1))
        );
        // Tags move between images.
        db.tag("docker.io/library/a:latest", &d(2)).unwrap();
        assert_eq!(
            db.resolve_tag("docker.io/library/a:latest").unwrap(),
            Some(d(2))
        );
        assert!(db.tag("x:y", &d(9)).is_err());
        let img = db.image(&d(2)).unwrap().unwrap();
        assert_eq!(img.layers, vec![l1.clone(), l3.clone()]);
        assert_eq!(img.tags.len(), 2);
        assert_eq!(db.images().unwrap().len(), 2);
        assert_eq!(db.images_by_prefix(&d(2).hex()[..6]).unwrap(), vec![d(2)]);
        assert!(db.unreferenced_layers().unwrap().is_empty());
        // Removing image 2 frees l3 but not the shared l1.
        assert!(db.delete_image(&d(2)).unwrap());
        assert_eq!(db.unreferenced_layers().unwrap(), vec![l3.clone()]);
        assert!(!db.blob_referenced(&d(102)).unwrap());
        assert!(db.blob_referenced(&d(101)).unwrap());
        assert_eq!(db.resolve_tag("docker.io/library/a:latest").unwrap(), None);
    }

    #[test]
    fn reopen_keeps_data_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut db = Db::open(dir.path()).unwrap();
            db.put_image(&image(1, &[], &["docker.io/library/a:latest"]))
                .unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.images().unwrap().len(), 1);
        db.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(db);
        let e = Db::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("schema version 99"), "{e}");
    }

    #[test]
    fn concurrent_writers_do_not_fail() {
        let dir = tempfile::tempdir().unwrap();
        Db::open(dir.path()).unwrap();
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                let p = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let mut db = Db::open(&p).unwrap();
                    for i in 0..20u32 {
                        let n = t * 20 + i + 1000;
                        db.put_image(&image(n, &[], &[&format!("docker.io/library/t{t}:{i}")]))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.images().unwrap().len(), 160);
    }
}
