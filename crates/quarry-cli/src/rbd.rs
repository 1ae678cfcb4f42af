//! `quarry rbd …` (or `rbd …` through a link): image commands with the `rbd` tool's syntax
//! (`[pool/[namespace/]]image[@snap]`, `-p`, `--image`, `--snap`), output (plain tables,
//! `--format json [--pretty-format]`) and errors (`rbd: error opening image x: (2) No such
//! file or directory`, exit status = errno, as Ceph's `rbd` returns it). Every image
//! operation is `quarry_rbd`'s: this module parses and prints. Long operations show Ceph's
//! progress line (`Removing image: 42% complete...done.`) on a terminal unless
//! `--no-progress`.

use std::io::IsTerminal;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use quarry_client::admin::plain::{bytes_iec, ctime, Align, Table};
use quarry_client::{IoCtx, Rados};
use quarry_conf::CommonArgs;
use quarry_rbd::{
    features, pool, CloneFormat, CreateOptions, Image, ImageInfo, OpenOptions, ParentInfo,
    Protection, RbdError,
};
use quarry_types::ErrorCode;

use crate::error::CliError;
use crate::session::{self, Tool};

/// The `rbd` tool's command line.
#[derive(clap::Args, Debug)]
#[command(about = "Ceph-compatible image commands (create, info, snap, clone, ...)", after_help = COMMANDS_HELP)]
pub struct RbdArgs {
    /// Who we are and where the cluster is.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Pool of the image (default `rbd`).
    #[arg(short = 'p', long = "pool", value_name = "POOL")]
    pub pool: Option<String>,
    /// Namespace of the image.
    #[arg(long = "namespace", value_name = "NS")]
    pub namespace: Option<String>,
    /// device map|unmap|list: the device type (`nbd`; `krbd` is not supported).
    #[arg(short = 't', long = "device-type", value_name = "TYPE")]
    pub device_type: Option<String>,
    /// Image name (instead of the positional spec).
    #[arg(long = "image", value_name = "IMAGE")]
    pub image: Option<String>,
    /// Snapshot name (instead of `@snap` in the spec).
    #[arg(long = "snap", value_name = "SNAP")]
    pub snap: Option<String>,
    /// Image size; a bare number is in MiB (`--size 1024` = 1 GiB); K, M, G, T suffixes.
    #[arg(short = 's', long = "size", value_name = "SIZE")]
    pub size: Option<String>,
    /// Object order (12..=25; objects of 2^order bytes).
    #[arg(long = "order", value_name = "ORDER")]
    pub order: Option<u8>,
    /// Object size (instead of --order), e.g. 4M.
    #[arg(long = "object-size", value_name = "SIZE")]
    pub object_size: Option<String>,
    /// Image features (repeatable or comma-separated): layering, exclusive-lock,
    /// object-map, fast-diff, deep-flatten, striping.
    #[arg(long = "image-feature", value_name = "FEATURE")]
    pub image_feature: Vec<String>,
    /// Image format (only 2).
    #[arg(long = "image-format", value_name = "FORMAT")]
    pub image_format: Option<u32>,
    /// Stripe unit (with --stripe-count).
    #[arg(long = "stripe-unit", value_name = "SIZE")]
    pub stripe_unit: Option<String>,
    /// Stripe count.
    #[arg(long = "stripe-count", value_name = "N")]
    pub stripe_count: Option<u64>,
    /// Write zeros over the whole image at create time.
    #[arg(long = "thick-provision")]
    pub thick_provision: bool,
    /// Allow `resize` to shrink the image.
    #[arg(long = "allow-shrink")]
    pub allow_shrink: bool,
    /// No progress output.
    #[arg(long = "no-progress")]
    pub no_progress: bool,
    /// Output format: plain (default), json or xml.
    #[arg(long = "format", value_name = "FORMAT")]
    pub format: Option<String>,
    /// Indent JSON or XML output.
    #[arg(long = "pretty-format")]
    pub pretty_format: bool,
    /// `ls -l`: long listing.
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    /// Clone format: 1 (parent snapshot must be protected) or 2 (default).
    #[arg(
        long = "rbd-default-clone-format",
        alias = "rbd_default_clone_format",
        value_name = "1|2|auto"
    )]
    pub clone_format: Option<String>,
    /// `diff`/`export-diff --from-snap SNAP`: changes since that snapshot.
    #[arg(long = "from-snap", value_name = "SNAP")]
    pub from_snap: Option<String>,
    /// `diff`/`export-diff --whole-object`: whole objects (the only granularity reported here).
    #[arg(long = "whole-object")]
    pub whole_object: bool,
    /// bench: read, write, readwrite (rw).
    #[arg(long = "io-type", value_name = "TYPE")]
    pub io_type: Option<String>,
    /// bench: bytes per I/O (default 4K).
    #[arg(long = "io-size", value_name = "SIZE")]
    pub io_size: Option<String>,
    /// bench: I/Os in flight (default 16).
    #[arg(long = "io-threads", value_name = "N")]
    pub io_threads: Option<usize>,
    /// bench: bytes in all (default 1G).
    #[arg(long = "io-total", value_name = "SIZE")]
    pub io_total: Option<String>,
    /// bench: seq (default) or rand.
    #[arg(long = "io-pattern", value_name = "PATTERN")]
    pub io_pattern: Option<String>,
    /// bench readwrite: percentage of reads (default 50).
    #[arg(long = "rw-mix-read", value_name = "PERCENT")]
    pub rw_mix_read: Option<u64>,
    /// trash mv: seconds before `trash rm` works without --force.
    #[arg(long = "delay", value_name = "SECONDS")]
    pub delay: Option<u64>,
    /// trash rm: remove before the deferment ends.
    #[arg(long = "force")]
    pub force: bool,
    /// lock add: a shared lock with this tag (default: exclusive).
    #[arg(long = "shared", value_name = "TAG")]
    pub shared: Option<String>,
    /// `snap limit set --limit N`.
    #[arg(long = "limit", value_name = "N")]
    pub limit: Option<u64>,
    /// The command and its arguments, e.g. `create --size 10G rbd/vm1`.
    #[arg(value_name = "COMMAND", allow_negative_numbers = true)]
    pub words: Vec<String>,
}

const COMMANDS_HELP: &str = "\
Image specs: [POOL/[NAMESPACE/]]IMAGE[@SNAP] (default pool: rbd)
  create --size SIZE [--order N|--object-size S] [--image-feature F] IMAGE
  ls [-l] [POOL]                     list images
  info IMAGE[@SNAP]                  show an image or snapshot
  resize --size SIZE [--allow-shrink] IMAGE
  rm IMAGE                           remove an image (no snapshots, no watchers)
  rename SRC DST                     rename an image within its pool
  snap create|ls|rm|rename|rollback|protect|unprotect|purge IMAGE[@SNAP] [NEW]
  snap limit set --limit N IMAGE | snap limit clear IMAGE
  clone PARENT@SNAP CHILD [--rbd-default-clone-format 1|2]
  children IMAGE@SNAP                list clones of a snapshot
  flatten IMAGE                      copy the parent's data in and unlink from it
  status IMAGE                       list watchers (who has the image open)
  du [IMAGE]                         provisioned and used space
  image-meta get|set|list|remove IMAGE [KEY [VALUE]]
  diff [--from-snap SNAP] IMAGE[@SNAP]  extents with data (or changed since SNAP)
  bench --io-type read|write|readwrite [--io-size S] [--io-threads N] [--io-total S]
        [--io-pattern seq|rand] [--rw-mix-read PCT] IMAGE
  trash mv IMAGE [--delay SECS] | trash ls [-l] [POOL] | trash restore [POOL/]ID [--image NAME]
  trash rm [POOL/]ID [--force] | trash purge [POOL]
  lock ls IMAGE | lock add IMAGE ID [--shared TAG] | lock rm IMAGE ID LOCKER
  watch IMAGE                         print the image's notifications until enter or EOF
  pool init [POOL]                   enable the rbd application on a pool
  device map|unmap|list -t nbd       not supported yet (says so; use quarry nbd serve)
  cp SRC[@SNAP] DST                  copy an image's data (a clone's parent data included)
  deep cp SRC DST                    copy an image with its snapshots (flat: parent data copied in)
  namespace create|rm POOL/NS | namespace ls [POOL]   image namespaces (images: POOL/NS/IMAGE)
  feature enable|disable IMAGE FEATURE...  exclusive-lock, object-map, fast-diff (deep-flatten: disable)
  export IMAGE[@SNAP] FILE|-         write the image's bytes to a file or stdout
  import FILE|- IMAGE                create an image from a file or stdin
  export-diff [--from-snap SNAP] [--whole-object] IMAGE[@SNAP] FILE|-
                                     changes since SNAP (rbd diff v1 stream)
  import-diff FILE|- IMAGE           apply a diff to the head, then create its end snapshot
  merge-diff FIRST SECOND FILE|-     merge two consecutive diffs into one";

/// Bytes per read or write of export and import.
const TRANSFER_CHUNK: u64 = 4 << 20;

/// An image spec resolved against the options.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Spec {
    pool: String,
    namespace: String,
    image: String,
    snap: Option<String>,
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/", self.pool)?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}", self.image)?;
        if let Some(snap) = &self.snap {
            write!(f, "@{snap}")?;
        }
        Ok(())
    }
}

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Plain,
    Json,
    Xml,
}

/// Whether a command needs a snapshot in its spec.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SnapRule {
    None,
    Optional,
    Required,
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::Usage { message: format!("rbd: {}", message.into()), status: 22 }
}

/// `rbd: WHAT: (N) Message`, exit N.
fn failed(what: &str, e: &RbdError) -> CliError {
    let code = e.errno();
    let reason = e.reason();
    let message = if reason.is_empty() {
        format!("rbd: {what}: {code}")
    } else {
        format!("rbd: {what}: {code}\nrbd: {reason}")
    };
    CliError::Usage { message, status: status_of(code) }
}

fn status_of(code: ErrorCode) -> u8 {
    u8::try_from(code.0).unwrap_or(1).max(1)
}

impl RbdArgs {
    fn default_pool(&self) -> String {
        self.pool.clone().unwrap_or_else(|| "rbd".into())
    }

    /// Parses a pool spec `pool[/ns]` (or --pool / --namespace): (pool, namespace).
    fn pool_spec(&self, arg: Option<&str>) -> (String, Option<String>) {
        match arg {
            Some(text) => match text.split_once('/') {
                Some((pool, namespace)) => (pool.to_string(), Some(namespace.to_string())),
                None => (text.to_string(), self.namespace.clone()),
            },
            None => (self.default_pool(), self.namespace.clone()),
        }
    }

    /// Parses `[pool/[ns/]]image[@snap]` (or --image/--snap) with the rule for snapshots.
    fn spec(&self, arg: Option<&str>, rule: SnapRule) -> Result<Spec, CliError> {
        let mut spec = Spec {
            pool: self.default_pool(),
            namespace: self.namespace.clone().unwrap_or_default(),
            image: String::new(),
            snap: None,
        };
        match arg {
            Some(text) => {
                let (path, snap) = match text.split_once('@') {
                    Some((p, s)) => (p, Some(s.to_string())),
                    None => (text, None),
                };
                let parts: Vec<&str> = path.split('/').collect();
                match parts.as_slice() {
                    [image] => spec.image = image.to_string(),
                    [pool, image] => {
                        spec.pool = pool.to_string();
                        spec.image = image.to_string();
                    }
                    [pool, ns, image] => {
                        spec.pool = pool.to_string();
                        spec.namespace = ns.to_string();
                        spec.image = image.to_string();
                    }
                    _ => return Err(usage(format!("invalid image spec '{text}'"))),
                }
                spec.snap = snap.or_else(|| self.snap.clone());
            }
            None => {
                spec.image = self.image.clone().unwrap_or_default();
                spec.snap = self.snap.clone();
            }
        }
        if spec.image.is_empty() {
            return Err(usage("image name was not specified"));
        }
        if spec.snap.as_deref() == Some("") {
            return Err(usage("snapshot name was not specified"));
        }
        match (rule, &spec.snap) {
            (SnapRule::None, Some(_)) => {
                return Err(usage("snapshot name specified for a command that doesn't use it"))
            }
            (SnapRule::Required, None) => return Err(usage("snapshot name was not specified")),
            _ => {}
        }
        Ok(spec)
    }

    /// `--format`: plain (default), json or xml.
    fn output_format(&self) -> Result<Format, CliError> {
        match self.format.as_deref() {
            None | Some("plain") => Ok(Format::Plain),
            Some("json") => Ok(Format::Json),
            Some("xml") => Ok(Format::Xml),
            Some(other) => Err(usage(format!("unsupported output format: {other}"))),
        }
    }

    /// Whether the output is formatted (JSON or XML) rather than plain.
    fn json(&self) -> Result<bool, CliError> {
        Ok(self.output_format()? != Format::Plain)
    }

    fn progress(&self) -> bool {
        !self.no_progress && std::io::stderr().is_terminal()
    }

    fn create_options(&self, size: u64) -> Result<CreateOptions, CliError> {
        let mut options = CreateOptions::new(size);
        if let Some(format) = self.image_format {
            if format != 2 {
                return Err(usage("image format 1 is not supported (only format 2)"));
            }
        }
        if let Some(order) = self.order {
            options.order = order;
        }
        if let Some(text) = &self.object_size {
            let bytes = quarry_conf::parse_size(text)
                .map_err(|_| usage(format!("invalid object size: {text}")))?;
            if !bytes.is_power_of_two() {
                return Err(usage("object size must be a power of two"));
            }
            options.order = bytes.trailing_zeros() as u8;
        }
        if !self.image_feature.is_empty() {
            let mut bits = 0;
            for name in self.image_feature.iter().flat_map(|f| f.split(',')) {
                let name = name.trim();
                let bit = features::by_name(name)
                    .or_else(|| name.parse::<u64>().ok())
                    .ok_or_else(|| usage(format!("invalid image feature: {name}")))?;
                bits |= bit;
            }
            options.features = bits;
        }
        if let Some(text) = &self.stripe_unit {
            options.stripe_unit = quarry_conf::parse_size(text)
                .map_err(|_| usage(format!("invalid stripe unit: {text}")))?;
        }
        if let Some(count) = self.stripe_count {
            options.stripe_count = count;
        }
        let object_size = 1u64 << options.order.min(63);
        let striped = (options.stripe_unit != 0 && options.stripe_unit != object_size)
            || options.stripe_count > 1;
        if striped {
            options.features |= features::STRIPINGV2;
        }
        Ok(options)
    }

    fn size(&self) -> Result<Option<u64>, CliError> {
        let Some(text) = &self.size else { return Ok(None) };
        let t = text.trim();
        let bytes = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse::<u64>().ok().and_then(|mib| mib.checked_mul(1 << 20))
        } else {
            quarry_conf::parse_size(t).ok()
        };
        bytes.map(Some).ok_or_else(|| usage(format!("invalid size: {text}")))
    }

    fn clone_format(&self) -> Result<CloneFormat, CliError> {
        match self.clone_format.as_deref() {
            None | Some("auto") | Some("2") => Ok(CloneFormat::V2),
            Some("1") => Ok(CloneFormat::V1),
            Some(other) => Err(usage(format!("invalid clone format: {other}"))),
        }
    }
}

/// Runs `rbd …`.
pub async fn run(args: RbdArgs) -> Result<(), CliError> {
    let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
    if words.is_empty() {
        return Err(usage(format!("missing command\n{COMMANDS_HELP}")));
    }
    // Check the command line before connecting.
    let command = Command::parse(&args, &words)?;
    if let Command::MergeDiff(first, second, path) = &command {
        // Files only: no cluster needed (as in Ceph).
        return merge_diff(&args, first, second, path).await;
    }
    let rados = connect(&args).await?;
    let result = command.execute(&args, &rados).await;
    close_opened().await;
    rados.shutdown().await;
    match result {
        Err(CliError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        other => other,
    }
}

/// The cache settings of the images this command opens: the central config (`ceph config
/// set client rbd_cache …`), ceph.conf over it, then `CEPH_ARGS`.
static CACHE: std::sync::OnceLock<quarry_rbd::CacheConfig> = std::sync::OnceLock::new();

fn load_cache_config(
    common: &CommonArgs,
    central: &std::collections::BTreeMap<String, String>,
) -> Result<(), CliError> {
    let (Ok((mut conf, _)), Ok(name)) = (common.load_conf(), quarry_conf::resolve_entity(common))
    else {
        return Ok(()); // connecting reported these already
    };
    let bad = |message: String| CliError::Usage { message, status: 22 };
    conf.set_central(central.clone());
    let mut cfg =
        quarry_rbd::CacheConfig::from_conf(&conf, &name).map_err(|e| bad(format!("rbd: {e}")))?;
    cfg.apply_args(&quarry_conf::ceph_args_env()).map_err(|e| bad(format!("rbd: {e}")))?;
    let _ = CACHE.set(cfg);
    Ok(())
}

async fn connect(args: &RbdArgs) -> Result<Rados, CliError> {
    match session::connect(&args.common, Tool::Rados).await {
        Ok(rados) => {
            load_cache_config(&args.common, rados.central_config())?;
            Ok(rados)
        }
        Err(CliError::RadosConnect { code, detail }) => Err(CliError::Usage {
            message: format!("{detail}\nrbd: couldn't connect to the cluster!"),
            status: status_of(code),
        }),
        Err(other) => Err(other),
    }
}

async fn open_pool(rados: &Rados, spec_pool: &str, namespace: &str) -> Result<IoCtx, CliError> {
    let mut io = rados.ioctx(spec_pool).await.map_err(|e| CliError::Usage {
        message: format!("rbd: error opening pool '{spec_pool}': {}", e.errno()),
        status: status_of(e.errno()),
    })?;
    if !namespace.is_empty() {
        io.set_namespace(namespace)
            .map_err(|e| failed("error setting namespace", &RbdError::from(e)))?;
    }
    Ok(io)
}

/// `rbd device map|unmap|list -t nbd`: attaching an image to `/dev/nbdX` needs the kernel's
/// nbd driver and is not built yet; the message says what to use instead. (Without the
/// driver, as on this project's test machines, there is nothing to attach to either way.)
fn device_unavailable(sub: &str) -> CliError {
    let driver = std::path::Path::new("/sys/module/nbd").exists();
    let why = if driver {
        "attaching images to /dev/nbd devices is not supported yet"
    } else {
        "the kernel has no nbd driver loaded (/sys/module/nbd is missing; try `modprobe nbd`), and attaching images to /dev/nbd devices is not supported yet"
    };
    CliError::Usage {
        message: format!(
            "rbd: device {sub} failed: {why}.\nrbd: serve the image with `quarry nbd serve POOL/IMAGE` and connect an NBD client (qemu nbd://, nbd-client, nbdfuse) instead."
        ),
        status: status_of(ErrorCode::EOPNOTSUPP),
    }
}

/// Images this command opened for writing: closed (lock released, watch ended) before the
/// tool exits, so the next writer need not fence this process.
static OPENED: std::sync::Mutex<Vec<Image>> = std::sync::Mutex::new(Vec::new());

async fn open_image(rados: &Rados, spec: &Spec, read_only: bool) -> Result<Image, CliError> {
    let io = open_pool(rados, &spec.pool, &spec.namespace).await?;
    let cache = CACHE.get().cloned().unwrap_or_default();
    let options = OpenOptions { snapshot: spec.snap.clone(), read_only, cache };
    let image = Image::open(&io, &spec.image, options)
        .await
        .map_err(|e| failed(&format!("error opening image {}", spec.image), &e))?;
    if !image.is_read_only() {
        OPENED.lock().unwrap_or_else(|p| p.into_inner()).push(image.clone());
    }
    Ok(image)
}

async fn close_opened() {
    let images: Vec<Image> = std::mem::take(&mut *OPENED.lock().unwrap_or_else(|p| p.into_inner()));
    for image in images {
        let name = image.name().to_string();
        if let Err(e) = image.close().await {
            tracing::warn!(image = name, error = %e, "closing the image failed");
        }
    }
}

fn print(text: &str) -> Result<(), CliError> {
    crate::output::stdout_bytes(text.as_bytes()).map_err(|e| CliError::io("<stdout>", e))
}

/// How a command's formatted output is shaped (Ceph's Formatter sections): the XML root
/// element and the order of the fields in JSON and XML (Ceph's; `serde_json` maps sort by
/// name).
struct Shape {
    root: &'static str,
    order: &'static [&'static str],
}

const INFO_SHAPE: Shape = Shape {
    root: "image",
    order: &[
        "name",
        "pool",
        "pool_namespace",
        "image",
        "id",
        "snapshot",
        "trash",
        "overlap",
        "size",
        "objects",
        "order",
        "object_size",
        "snapshot_count",
        "block_name_prefix",
        "format",
        "features",
        "op_features",
        "flags",
        "create_timestamp",
        "access_timestamp",
        "modify_timestamp",
        "stripe_unit",
        "stripe_count",
        "protected",
        "parent",
    ],
};
const LS_SHAPE: Shape = Shape {
    root: "images",
    order: &[
        "pool",
        "pool_namespace",
        "image",
        "id",
        "snapshot",
        "snapshot_id",
        "size",
        "parent",
        "format",
        "protected",
        "lock_type",
    ],
};
const SNAP_LS_SHAPE: Shape =
    Shape { root: "snapshots", order: &["id", "name", "size", "protected", "timestamp"] };
const STATUS_SHAPE: Shape =
    Shape { root: "status", order: &["watchers", "address", "client", "cookie"] };
const DU_SHAPE: Shape = Shape {
    root: "stats",
    order: &[
        "images",
        "name",
        "id",
        "snapshot",
        "snapshot_id",
        "provisioned_size",
        "used_size",
        "total_provisioned_size",
        "total_used_size",
    ],
};
const CHILDREN_SHAPE: Shape =
    Shape { root: "children", order: &["pool", "pool_namespace", "image", "id", "trash"] };
const NAMESPACE_SHAPE: Shape = Shape { root: "namespaces", order: &["name"] };
const META_SHAPE: Shape = Shape { root: "metadatas", order: &[] };
const DIFF_SHAPE: Shape = Shape { root: "extents", order: &["offset", "length", "exists"] };
const LOCK_SHAPE: Shape = Shape { root: "locks", order: &["locker", "address"] };
const TRASH_SHAPE: Shape = Shape {
    root: "trash",
    order: &[
        "id",
        "name",
        "source",
        "deleted_at",
        "status",
        "parent",
        "pool",
        "pool_namespace",
        "image",
        "snapshot",
    ],
};

/// The element name of the items of array `name` (Ceph's section names; `ls` without `-l`
/// lists bare names).
fn xml_item(name: &str, item: &Value) -> &'static str {
    match name {
        "images" if !item.is_object() => "name",
        "images" | "trash" => "image",
        "snapshots" => "snapshot",
        "watchers" => "watcher",
        "features" => "feature",
        "op_features" => "op_feature",
        "flags" => "flag",
        "children" => "child",
        "namespaces" => "namespace",
        "extents" => "extent",
        _ => "item",
    }
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders `value` as element `name` the way Ceph's XMLFormatter does (`pretty`: one element
/// a line, four spaces a level).
fn xml_element(
    out: &mut String,
    name: &str,
    value: &Value,
    shape: &Shape,
    pretty: bool,
    depth: usize,
) {
    let indent = if pretty { "    ".repeat(depth) } else { String::new() };
    let newline = if pretty { "\n" } else { "" };
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => {
            ordered(map, shape).into_iter().map(|(k, v)| (k.clone(), v)).collect()
        }
        Value::Array(items) => items.iter().map(|v| (xml_item(name, v).to_string(), v)).collect(),
        _ => {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            out.push_str(&format!("{indent}<{name}>{}</{name}>{newline}", xml_escape(&text)));
            return;
        }
    };
    if children.is_empty() {
        out.push_str(&format!("{indent}<{name}></{name}>{newline}"));
        return;
    }
    out.push_str(&format!("{indent}<{name}>{newline}"));
    for (child, v) in children {
        xml_element(out, &child, v, shape, pretty, depth + 1);
    }
    out.push_str(&format!("{indent}</{name}>{newline}"));
}

/// Object fields in the shape's order (Ceph's), the others after them by name.
fn ordered<'a>(
    map: &'a serde_json::Map<String, Value>,
    shape: &Shape,
) -> Vec<(&'a String, &'a Value)> {
    let mut fields: Vec<(&String, &Value)> = map.iter().collect();
    let rank = |k: &str| shape.order.iter().position(|o| *o == k).unwrap_or(usize::MAX);
    fields.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then(a.0.cmp(b.0)));
    fields
}

/// Renders `value` as Ceph's JSONFormatter does: compact, or (`pretty`) four spaces a level
/// and `"key": value`; fields in Ceph's order.
fn json_value(out: &mut String, value: &Value, shape: &Shape, pretty: bool, depth: usize) {
    let pad = |d: usize| if pretty { format!("\n{}", "    ".repeat(d)) } else { String::new() };
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, v)) in ordered(map, shape).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&pad(depth + 1));
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(if pretty { ": " } else { ":" });
                json_value(out, v, shape, pretty, depth + 1);
            }
            out.push_str(&pad(depth));
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&pad(depth + 1));
                json_value(out, v, shape, pretty, depth + 1);
            }
            out.push_str(&pad(depth));
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

/// Prints a listing or info as JSON or XML (`--format`, `--pretty-format`).
fn print_formatted(args: &RbdArgs, shape: &Shape, value: &Value) -> Result<(), CliError> {
    let text = match args.output_format()? {
        Format::Xml => {
            let mut text = String::new();
            xml_element(&mut text, shape.root, value, shape, args.pretty_format, 0);
            text.trim_end().to_string()
        }
        _ => {
            let mut text = String::new();
            json_value(&mut text, value, shape, args.pretty_format, 0);
            text
        }
    };
    print(&format!("{text}\n"))
}

/// Ceph's percentage progress line on stderr: `Removing image: 42% complete...`.
struct Progress {
    label: &'static str,
    shown: bool,
    last: u64,
}

impl Progress {
    fn new(label: &'static str, enabled: bool) -> Progress {
        Progress { label, shown: enabled, last: u64::MAX }
    }

    fn update(&mut self, done: u64, total: u64) {
        if !self.shown {
            return;
        }
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        if pct != self.last {
            self.last = pct;
            eprint!("\r{}: {pct}% complete...", self.label);
        }
    }

    fn finish(&self, ok: bool) {
        if self.shown {
            eprintln!("\r{}: 100% complete...{}", self.label, if ok { "done." } else { "failed." });
        }
    }
}

/// One parsed command.
enum Command {
    Create(Spec),
    Ls { pool: String },
    Info(Spec),
    Resize(Spec),
    Rm(Spec),
    Rename(Spec, Spec),
    SnapCreate(Spec),
    SnapLs(Spec),
    SnapRm(Spec),
    SnapRename(Spec, String),
    SnapRollback(Spec),
    SnapProtect(Spec),
    SnapUnprotect(Spec),
    SnapPurge(Spec),
    SnapLimit(Spec, Option<u64>),
    Clone(Spec, Spec),
    Children(Spec),
    Flatten(Spec),
    Status(Spec),
    Du { pool: String, image: Option<Spec> },
    MetaGet(Spec, String),
    MetaSet(Spec, String, String),
    MetaList(Spec),
    MetaRemove(Spec, String),
    Export(Spec, String),
    Import(String, Spec),
    ExportDiff(Spec, String),
    ImportDiff(String, Spec),
    MergeDiff(String, String, String),
    Diff(Spec),
    Bench(Spec),
    TrashMv(Spec),
    TrashLs { pool: String },
    TrashRestore { pool: String, id: String },
    TrashRm { pool: String, id: String },
    TrashPurge { pool: String },
    Feature(Spec, bool, Vec<String>),
    Copy(Spec, Spec),
    NamespaceCreate { pool: String, namespace: String },
    NamespaceRm { pool: String, namespace: String },
    NamespaceLs { pool: String },
    DeepCopy(Spec, Spec),
    Watch(Spec),
    PoolInit { pool: String },
    Device(String),
    LockLs(Spec),
    LockAdd(Spec, String),
    LockRm(Spec, String, String),
}

impl Command {
    fn parse(args: &RbdArgs, w: &[&str]) -> Result<Command, CliError> {
        let arg = |i: usize| w.get(i).copied();
        let need =
            |i: usize, what: &str| arg(i).ok_or_else(|| usage(format!("{what} was not specified")));
        let spec = |i: usize, rule| args.spec(arg(i), rule);
        Ok(match w[0] {
            "create" => {
                if args.size.is_none() {
                    return Err(usage("must specify --size <M/G/T>"));
                }
                Command::Create(spec(1, SnapRule::None)?)
            }
            "ls" | "list" => Command::Ls {
                pool: arg(1).map(str::to_string).unwrap_or_else(|| args.default_pool()),
            },
            "info" => Command::Info(spec(1, SnapRule::Optional)?),
            "resize" => {
                if args.size.is_none() {
                    return Err(usage("must specify --size <M/G/T>"));
                }
                Command::Resize(spec(1, SnapRule::None)?)
            }
            "rm" | "remove" => Command::Rm(spec(1, SnapRule::None)?),
            "rename" | "mv" => {
                let src = spec(1, SnapRule::None)?;
                let dst = args.spec(Some(need(2, "destination image name")?), SnapRule::None)?;
                let dst = Spec {
                    pool: if w[2].contains('/') { dst.pool } else { src.pool.clone() },
                    ..dst
                };
                if dst.pool != src.pool {
                    return Err(usage("mv/rename across pools not supported"));
                }
                Command::Rename(src, dst)
            }
            "snap" => {
                let sub = need(1, "snap command")?;
                let snap_spec = |i: usize, rule| args.spec(arg(i), rule);
                match sub {
                    "create" | "add" => Command::SnapCreate(snap_spec(2, SnapRule::Required)?),
                    "ls" | "list" => Command::SnapLs(snap_spec(2, SnapRule::None)?),
                    "rm" | "remove" => Command::SnapRm(snap_spec(2, SnapRule::Required)?),
                    "rename" => {
                        let from = snap_spec(2, SnapRule::Required)?;
                        let to = need(3, "destination snapshot name")?;
                        let to = to.rsplit_once('@').map_or(to, |(_, s)| s).to_string();
                        Command::SnapRename(from, to)
                    }
                    "rollback" | "revert" => {
                        Command::SnapRollback(snap_spec(2, SnapRule::Required)?)
                    }
                    "protect" => Command::SnapProtect(snap_spec(2, SnapRule::Required)?),
                    "unprotect" => Command::SnapUnprotect(snap_spec(2, SnapRule::Required)?),
                    "purge" => Command::SnapPurge(snap_spec(2, SnapRule::None)?),
                    "limit" => match arg(2) {
                        Some("set") => {
                            let limit = args
                                .limit
                                .ok_or_else(|| usage("must specify limit (--limit N)"))?;
                            Command::SnapLimit(snap_spec(3, SnapRule::None)?, Some(limit))
                        }
                        Some("clear") => Command::SnapLimit(snap_spec(3, SnapRule::None)?, None),
                        _ => return Err(usage("snap limit: expected set or clear")),
                    },
                    other => return Err(usage(format!("unknown snap command '{other}'"))),
                }
            }
            "clone" => {
                let parent = spec(1, SnapRule::Required)?;
                let child = args.spec(Some(need(2, "destination image name")?), SnapRule::None)?;
                Command::Clone(parent, child)
            }
            "children" => Command::Children(spec(1, SnapRule::Required)?),
            "flatten" => Command::Flatten(spec(1, SnapRule::None)?),
            "status" => Command::Status(spec(1, SnapRule::None)?),
            "du" | "disk-usage" => {
                let image = match arg(1).or(args.image.as_deref()) {
                    Some(_) => Some(spec(1, SnapRule::Optional)?),
                    None => None,
                };
                let pool =
                    image.as_ref().map(|s| s.pool.clone()).unwrap_or_else(|| args.default_pool());
                Command::Du { pool, image }
            }
            "image-meta" => {
                let sub = need(1, "image-meta command")?;
                let image = args.spec(arg(2), SnapRule::None)?;
                match sub {
                    "get" => Command::MetaGet(image, need(3, "metadata key")?.to_string()),
                    "set" => Command::MetaSet(
                        image,
                        need(3, "metadata key")?.to_string(),
                        need(4, "metadata value")?.to_string(),
                    ),
                    "list" | "ls" => Command::MetaList(image),
                    "remove" | "rm" => {
                        Command::MetaRemove(image, need(3, "metadata key")?.to_string())
                    }
                    other => return Err(usage(format!("unknown image-meta command '{other}'"))),
                }
            }
            "diff" => Command::Diff(spec(1, SnapRule::Optional)?),
            "watch" => Command::Watch(spec(1, SnapRule::None)?),
            "pool" => match need(1, "pool command")? {
                "init" => Command::PoolInit {
                    pool: arg(2).map(str::to_string).unwrap_or_else(|| args.default_pool()),
                },
                other => return Err(usage(format!("unknown pool command '{other}'"))),
            },
            "device" => {
                let sub = need(1, "device command")?.to_string();
                match args.device_type.as_deref().unwrap_or("krbd") {
                    "nbd" => {}
                    other => {
                        return Err(usage(format!(
                            "device type '{other}' is not supported: use -t nbd"
                        )))
                    }
                }
                match sub.as_str() {
                    "map" | "unmap" | "list" | "ls" => Command::Device(sub),
                    other => return Err(usage(format!("unknown device command '{other}'"))),
                }
            }
            "cp" | "copy" => {
                let src = spec(1, SnapRule::Optional)?;
                let dst = args.spec(Some(need(2, "destination image name")?), SnapRule::None)?;
                Command::Copy(src, dst)
            }
            "deep" => match need(1, "deep command")? {
                "cp" | "copy" => {
                    let src = spec(2, SnapRule::None)?;
                    let dst =
                        args.spec(Some(need(3, "destination image name")?), SnapRule::None)?;
                    Command::DeepCopy(src, dst)
                }
                other => return Err(usage(format!("unknown deep command '{other}'"))),
            },
            "feature" => {
                let enable = match need(1, "feature command")? {
                    "enable" => true,
                    "disable" => false,
                    other => return Err(usage(format!("unknown feature command '{other}'"))),
                };
                let image = args.spec(arg(2), SnapRule::None)?;
                let names: Vec<String> = w.iter().skip(3).map(|s| s.to_string()).collect();
                if names.is_empty() {
                    return Err(usage("at least one feature name must be specified"));
                }
                Command::Feature(image, enable, names)
            }
            "lock" => {
                let sub = need(1, "lock command")?;
                let image = args.spec(arg(2), SnapRule::None)?;
                match sub {
                    "ls" | "list" => Command::LockLs(image),
                    "add" => Command::LockAdd(image, need(3, "lock id")?.to_string()),
                    "rm" | "remove" => Command::LockRm(
                        image,
                        need(3, "lock id")?.to_string(),
                        need(4, "locker")?.to_string(),
                    ),
                    other => return Err(usage(format!("unknown lock command '{other}'"))),
                }
            }
            "namespace" => {
                let sub = need(1, "namespace command")?;
                // `[pool/]ns`, or --pool / --namespace.
                let (pool, namespace) = args.pool_spec(arg(2));
                match sub {
                    "create" | "rm" | "remove" => {
                        let namespace = namespace
                            .filter(|n| !n.is_empty())
                            .ok_or_else(|| usage("namespace name was not specified"))?;
                        if sub == "create" {
                            Command::NamespaceCreate { pool, namespace }
                        } else {
                            Command::NamespaceRm { pool, namespace }
                        }
                    }
                    "ls" | "list" => Command::NamespaceLs { pool },
                    other => return Err(usage(format!("unknown namespace command '{other}'"))),
                }
            }
            "trash" => {
                let sub = need(1, "trash command")?;
                // `[pool/]ID`.
                let pool_and = |text: &str| match text.split_once('/') {
                    Some((pool, rest)) => (pool.to_string(), rest.to_string()),
                    None => (args.default_pool(), text.to_string()),
                };
                match sub {
                    "mv" | "move" => Command::TrashMv(args.spec(arg(2), SnapRule::None)?),
                    "ls" | "list" => Command::TrashLs {
                        pool: arg(2).map(str::to_string).unwrap_or_else(|| args.default_pool()),
                    },
                    "restore" => {
                        let (pool, id) = pool_and(need(2, "image id")?);
                        Command::TrashRestore { pool, id }
                    }
                    "rm" | "remove" => {
                        let (pool, id) = pool_and(need(2, "image id")?);
                        Command::TrashRm { pool, id }
                    }
                    "purge" => Command::TrashPurge {
                        pool: arg(2).map(str::to_string).unwrap_or_else(|| args.default_pool()),
                    },
                    other => return Err(usage(format!("unknown trash command '{other}'"))),
                }
            }
            "bench" => {
                if args.io_type.is_none() {
                    return Err(usage("must specify --io-type <read | write | readwrite | rw>"));
                }
                Command::Bench(spec(1, SnapRule::None)?)
            }
            "export" => {
                let image = spec(1, SnapRule::Optional)?;
                let path = arg(2).map(str::to_string).unwrap_or_else(|| image.image.clone());
                Command::Export(image, path)
            }
            "export-diff" => {
                let image = spec(1, SnapRule::Optional)?;
                Command::ExportDiff(image, need(2, "path")?.to_string())
            }
            "import-diff" => {
                let path = need(1, "path")?.to_string();
                Command::ImportDiff(path, spec(2, SnapRule::None)?)
            }
            "merge-diff" => Command::MergeDiff(
                need(1, "first diff path")?.to_string(),
                need(2, "second diff path")?.to_string(),
                need(3, "destination path")?.to_string(),
            ),
            "import" => {
                let path = need(1, "path")?.to_string();
                let default_name = std::path::Path::new(&path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let target = arg(2)
                    .map(str::to_string)
                    .or_else(|| args.image.clone())
                    .unwrap_or(default_name);
                Command::Import(path, args.spec(Some(&target), SnapRule::None)?)
            }
            other => {
                return Err(usage(format!(
                    "error parsing command '{other}'{}; -h or --help for usage",
                    crate::suggest::hint(other, crate::suggest::RBD_COMMANDS.iter().copied())
                )))
            }
        })
    }

    async fn execute(self, args: &RbdArgs, rados: &Rados) -> Result<(), CliError> {
        match self {
            Command::Create(spec) => create(args, rados, &spec).await,
            Command::Ls { pool } => ls(args, rados, &pool).await,
            Command::NamespaceCreate { pool, namespace } => {
                let io = open_pool(rados, &pool, "").await?;
                quarry_rbd::namespace::create(&io, &namespace)
                    .await
                    .map_err(|e| failed("failed to created namespace", &e))
            }
            Command::NamespaceRm { pool, namespace } => {
                let io = open_pool(rados, &pool, "").await?;
                match quarry_rbd::namespace::remove(&io, &namespace).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.errno() == ErrorCode::EBUSY => Err(CliError::Usage {
                        message: "rbd: namespace contains images which must be deleted first."
                            .into(),
                        status: status_of(ErrorCode::EBUSY),
                    }),
                    Err(e) if e.errno() == ErrorCode::ENOENT => Err(CliError::Usage {
                        message: "rbd: namespace does not exist.".into(),
                        status: status_of(ErrorCode::ENOENT),
                    }),
                    Err(e) => Err(failed("failed to remove namespace", &e)),
                }
            }
            Command::NamespaceLs { pool } => {
                let io = open_pool(rados, &pool, "").await?;
                let names = quarry_rbd::namespace::list(&io)
                    .await
                    .map_err(|e| failed("failed to list namespaces", &e))?;
                if args.json()? {
                    let rows: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
                    return print_formatted(args, &NAMESPACE_SHAPE, &Value::Array(rows));
                }
                if names.is_empty() {
                    return Ok(());
                }
                let mut table = Table::new(&[("NAME", Align::Left)]).left_heads();
                for name in names {
                    table.row(vec![name]);
                }
                print(&table.render())
            }
            Command::Info(spec) => info(args, rados, &spec).await,
            Command::Resize(spec) => resize(args, rados, &spec).await,
            Command::Rm(spec) => rm(args, rados, &spec).await,
            Command::Rename(src, dst) => {
                let io = open_pool(rados, &src.pool, &src.namespace).await?;
                pool::rename(&io, &src.image, &dst.image)
                    .await
                    .map_err(|e| failed("rename error", &e))
            }
            Command::SnapCreate(spec) => {
                let image = open_image(rados, &Spec { snap: None, ..spec.clone() }, false).await?;
                let name = spec.snap.unwrap_or_default();
                let mut progress = Progress::new("Creating snap", args.progress());
                progress.update(0, 1);
                let result = image.snap_create(&name).await;
                progress.finish(result.is_ok());
                result.map(drop).map_err(|e| failed("failed to create snapshot", &e))
            }
            Command::SnapLs(spec) => snap_ls(args, rados, &spec).await,
            Command::SnapRm(spec) => {
                let image = open_image(rados, &Spec { snap: None, ..spec.clone() }, false).await?;
                let name = spec.snap.unwrap_or_default();
                match image.snap_remove(&name).await {
                    Ok(()) => Ok(()),
                    Err(e)
                        if e.errno() == ErrorCode::EBUSY
                            && e.reason() == "snapshot is protected" =>
                    {
                        Err(CliError::Usage {
                            message: format!("rbd: snapshot '{name}' is protected from removal."),
                            status: 16,
                        })
                    }
                    Err(e) => Err(failed("failed to remove snapshot", &e)),
                }
            }
            Command::SnapRename(spec, to) => {
                let image = open_image(rados, &Spec { snap: None, ..spec.clone() }, false).await?;
                image
                    .snap_rename(spec.snap.as_deref().unwrap_or_default(), &to)
                    .await
                    .map_err(|e| failed("renaming snap failed", &e))
            }
            Command::SnapRollback(spec) => {
                let image = open_image(rados, &Spec { snap: None, ..spec.clone() }, false).await?;
                let mut progress = Progress::new("Rolling back to snapshot", args.progress());
                let result = image
                    .snap_rollback(spec.snap.as_deref().unwrap_or_default(), |d, t| {
                        progress.update(d, t)
                    })
                    .await;
                progress.finish(result.is_ok());
                result.map_err(|e| failed("rollback failed", &e))
            }
            Command::SnapProtect(spec) => {
                let image = open_image(rados, &Spec { snap: None, ..spec.clone() }, false).await?;
                match image.snap_protect(spec.snap.as_deref().unwrap_or_default()).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.errno() == ErrorCode::EBUSY => Err(CliError::Usage {
                        message: "rbd: snap is already protected".into(),
                        status: 16,
                    }),
                    Err(e) => Err(failed("protecting snap failed", &e)),
                }
            }
            Command::SnapUnprotect(spec) => {
                let image = open_image(rados, &Spec { snap: None, ..spec.clone() }, false).await?;
                match image.snap_unprotect(spec.snap.as_deref().unwrap_or_default()).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.errno() == ErrorCode::EINVAL => Err(CliError::Usage {
                        message: "rbd: snap is already unprotected".into(),
                        status: 22,
                    }),
                    Err(e) => Err(CliError::Usage {
                        message: format!("rbd: unprotecting snap failed: {}", e.errno()),
                        status: status_of(e.errno()),
                    }),
                }
            }
            Command::SnapPurge(spec) => snap_purge(args, rados, &spec).await,
            Command::SnapLimit(spec, limit) => {
                let image = open_image(rados, &spec, false).await?;
                image
                    .snap_set_limit(limit)
                    .await
                    .map_err(|e| failed("setting snapshot limit failed", &e))
            }
            Command::Clone(parent, child) => clone(args, rados, &parent, &child).await,
            Command::Children(spec) => children(args, rados, &spec).await,
            Command::Flatten(spec) => {
                let image = open_image(rados, &spec, false).await?;
                let mut progress = Progress::new("Image flatten", args.progress());
                let result = image.flatten(|d, t| progress.update(d, t)).await;
                progress.finish(result.is_ok());
                result.map_err(|e| failed("flatten error", &e))
            }
            Command::Status(spec) => status(args, rados, &spec).await,
            Command::Du { pool, image } => du(args, rados, &pool, image.as_ref()).await,
            Command::MetaGet(spec, key) => {
                let image = open_image(rados, &spec, true).await?;
                match image.metadata_get(&key).await {
                    Ok(value) => print(&format!("{value}\n")),
                    Err(e) => Err(failed(&format!("failed to get metadata {key} of image"), &e)),
                }
            }
            Command::MetaSet(spec, key, value) => {
                let image = open_image(rados, &spec, false).await?;
                image
                    .metadata_set(&key, &value)
                    .await
                    .map_err(|e| failed(&format!("failed to set metadata {key} of image"), &e))
            }
            Command::MetaRemove(spec, key) => {
                let image = open_image(rados, &spec, false).await?;
                image
                    .metadata_remove(&key)
                    .await
                    .map_err(|e| failed(&format!("failed to remove metadata {key} of image"), &e))
            }
            Command::MetaList(spec) => {
                let image = open_image(rados, &spec, true).await?;
                let entries = image
                    .metadata_list()
                    .await
                    .map_err(|e| failed("failed to list metadata of image", &e))?;
                if args.json()? {
                    let map: serde_json::Map<String, Value> =
                        entries.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
                    return print_formatted(args, &META_SHAPE, &Value::Object(map));
                }
                if entries.is_empty() {
                    return Ok(());
                }
                let mut table =
                    Table::new(&[("Key", Align::Left), ("Value", Align::Left)]).left_heads();
                for (k, v) in &entries {
                    table.row(vec![k.clone(), v.clone()]);
                }
                print(&format!(
                    "There {} {} metadata on this image:\n\n{}",
                    if entries.len() == 1 { "is" } else { "are" },
                    entries.len(),
                    table.render()
                ))
            }
            Command::Export(spec, path) => export(args, rados, &spec, &path).await,
            Command::Import(path, spec) => import(args, rados, &path, &spec).await,
            Command::ExportDiff(spec, path) => export_diff(args, rados, &spec, &path).await,
            Command::ImportDiff(path, spec) => import_diff(args, rados, &path, &spec).await,
            Command::MergeDiff(first, second, path) => {
                merge_diff(args, &first, &second, &path).await
            }
            Command::Diff(spec) => diff(args, rados, &spec).await,
            Command::Bench(spec) => bench(args, rados, &spec).await,
            Command::TrashMv(spec) => {
                let io = open_pool(rados, &spec.pool, &spec.namespace).await?;
                pool::trash_move(&io, &spec.image, args.delay.unwrap_or(0))
                    .await
                    .map(drop)
                    .map_err(|e| failed("deferred delete error", &e))
            }
            Command::TrashLs { pool } => trash_ls(args, rados, &pool).await,
            Command::LockLs(spec) => lock_ls(args, rados, &spec).await,
            Command::Watch(spec) => watch(rados, &spec).await,
            Command::PoolInit { pool } => {
                let cmd = quarry_client::MonCommand::PoolApplicationEnable {
                    pool: pool.clone(),
                    app: "rbd".into(),
                };
                rados
                    .command(cmd)
                    .await
                    .map_err(|e| failed("error initializing pool", &RbdError::from(e)))?;
                let io = open_pool(rados, &pool, "").await?;
                io.create("rbd_directory", false)
                    .await
                    .map_err(|e| failed("error initializing pool", &RbdError::from(e)))
            }
            Command::Device(sub) => Err(device_unavailable(&sub)),
            Command::Copy(src, dst) => {
                let source = open_image(rados, &src, true).await?;
                let io = open_pool(rados, &dst.pool, &dst.namespace).await?;
                let mut options = args.create_options(0)?;
                let info = source.info().await;
                if args.image_feature.is_empty() {
                    options.features = info.features & !features::STRIPINGV2;
                }
                if args.order.is_none() && args.object_size.is_none() {
                    options.order = info.order;
                }
                let mut progress = Progress::new("Image copy", args.progress());
                let result =
                    pool::copy(&source, &io, &dst.image, &options, |d, t| progress.update(d, t))
                        .await;
                progress.finish(result.is_ok());
                result.map_err(|e| failed("copy failed", &e))
            }
            Command::DeepCopy(src, dst) => {
                let source = open_image(rados, &src, true).await?;
                let info = source.info().await;
                source.close().await.map_err(|e| failed("deep copy failed", &e))?;
                let src_io = open_pool(rados, &src.pool, &src.namespace).await?;
                let io = open_pool(rados, &dst.pool, &dst.namespace).await?;
                let mut options = args.create_options(0)?;
                if args.image_feature.is_empty() {
                    options.features = info.features & !features::STRIPINGV2;
                }
                if args.order.is_none() && args.object_size.is_none() {
                    options.order = info.order;
                }
                let mut progress = Progress::new("Image deep copy", args.progress());
                let result =
                    pool::deep_copy(&src_io, &src.image, &io, &dst.image, &options, |d, t| {
                        progress.update(d, t)
                    })
                    .await;
                progress.finish(result.is_ok());
                result.map_err(|e| failed("deep copy failed", &e))
            }
            Command::Feature(spec, enable, names) => {
                let mut bits = 0;
                for name in names.iter().flat_map(|n| n.split(',')) {
                    bits |= features::by_name(name.trim())
                        .ok_or_else(|| usage(format!("invalid feature name: {name}")))?;
                }
                let image = open_image(rados, &spec, false).await?;
                image
                    .update_features(bits, enable)
                    .await
                    .map_err(|e| failed("failed to update image features", &e))
            }
            Command::LockAdd(spec, id) => {
                let image = open_image(rados, &spec, true).await?;
                match image.lock_add(&id, args.shared.as_deref()).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.errno() == ErrorCode::EBUSY || e.errno() == ErrorCode::EEXIST => {
                        Err(CliError::Usage {
                            message: format!(
                                "rbd: lock is already held by someone else{}",
                                if e.errno() == ErrorCode::EEXIST {
                                    " with the same id"
                                } else {
                                    ""
                                }
                            ),
                            status: status_of(e.errno()),
                        })
                    }
                    Err(e) => Err(failed("locking failed", &e)),
                }
            }
            Command::LockRm(spec, id, locker) => {
                let image = open_image(rados, &spec, true).await?;
                image
                    .lock_break(&locker, &id)
                    .await
                    .map_err(|e| failed("releasing lock failed", &e))
            }
            Command::TrashRestore { pool, id } => {
                let io = open_pool(rados, &pool, args.namespace.as_deref().unwrap_or("")).await?;
                pool::trash_restore(&io, &id, args.image.as_deref())
                    .await
                    .map(drop)
                    .map_err(|e| failed("restore error", &e))
            }
            Command::TrashRm { pool, id } => {
                let io = open_pool(rados, &pool, args.namespace.as_deref().unwrap_or("")).await?;
                let mut progress = Progress::new("Removing image", args.progress());
                let result =
                    pool::trash_remove(&io, &id, args.force, |d, t| progress.update(d, t)).await;
                progress.finish(result.is_ok());
                match result {
                    Err(e) if e.errno() == ErrorCode::EPERM => Err(CliError::Usage {
                        message: format!("rbd: error: {}", e.reason()),
                        status: 1,
                    }),
                    other => other.map_err(|e| failed("remove error", &e)),
                }
            }
            Command::TrashPurge { pool } => {
                let io = open_pool(rados, &pool, args.namespace.as_deref().unwrap_or("")).await?;
                let items = pool::trash_list(&io).await.map_err(|e| failed("purge error", &e))?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                for item in items.iter().filter(|i| i.entry.deferment_end_time.0 <= now) {
                    pool::trash_remove(&io, &item.id, false, |_, _| {})
                        .await
                        .map_err(|e| failed("purge error", &e))?;
                }
                Ok(())
            }
        }
    }
}

async fn create(args: &RbdArgs, rados: &Rados, spec: &Spec) -> Result<(), CliError> {
    let size = args.size()?.unwrap_or(0);
    let options = args.create_options(size)?;
    let io = open_pool(rados, &spec.pool, &spec.namespace).await?;
    pool::create(&io, &spec.image, &options).await.map_err(|e| failed("create error", &e))?;
    if args.thick_provision && size > 0 {
        let image = open_image(rados, spec, false).await?;
        let mut progress = Progress::new("Thick provisioning", args.progress());
        image
            .write_zero_bytes(0, size, |done, total| progress.update(done, total))
            .await
            .map_err(|e| failed("thick provision error", &e))?;
        progress.finish(true);
    }
    Ok(())
}

async fn ls(args: &RbdArgs, rados: &Rados, pool_spec: &str) -> Result<(), CliError> {
    let (pool_name, namespace) = args.pool_spec(Some(pool_spec));
    let pool_name = pool_name.as_str();
    let io = match open_pool(rados, pool_name, namespace.as_deref().unwrap_or("")).await {
        Ok(io) => io,
        Err(CliError::Usage { message, status }) => {
            return Err(CliError::Usage {
                message: format!(
                    "{message}\nrbd: listing images failed: ({status}) {}",
                    ErrorCode(i32::from(status)).message()
                ),
                status,
            })
        }
        Err(e) => return Err(e),
    };
    let images = pool::list(&io).await.map_err(|e| failed("listing images failed", &e))?;
    let json = args.json()?;
    if !args.long {
        if json {
            let names: Vec<Value> = images.iter().map(|i| json!(i.name)).collect();
            return print_formatted(args, &LS_SHAPE, &Value::Array(names));
        }
        return print(&images.iter().map(|i| format!("{}\n", i.name)).collect::<String>());
    }
    let mut rows: Vec<Value> = Vec::new();
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("SIZE", Align::Right),
        ("PARENT", Align::Left),
        ("FMT", Align::Right),
        ("PROT", Align::Left),
        ("LOCK", Align::Left),
    ])
    .left_heads();
    for entry in &images {
        let Some(image) = open_listed(&io, entry, "error opening image").await? else { continue };
        let info = image.info().await;
        let parent = parent_name(rados, info.parent.as_ref()).await;
        table.row(vec![
            entry.name.clone(),
            bytes_iec(info.size),
            parent.as_ref().map(|p| p.spec()).unwrap_or_default(),
            "2".into(),
            String::new(),
            String::new(),
        ]);
        let mut row = json!({"image": entry.name, "id": entry.id, "size": info.size});
        if let Some(p) = &parent {
            row["parent"] = json!({"pool": p.pool, "pool_namespace": p.namespace, "image": p.image, "snapshot": p.snap});
        }
        row["format"] = json!(2);
        rows.push(row);
        for snap in image.snapshots().await {
            let protected = snap.protection == Protection::Protected;
            table.row(vec![
                format!("{}@{}", entry.name, snap.name),
                bytes_iec(snap.size),
                String::new(),
                "2".into(),
                if protected { "yes".into() } else { String::new() },
                String::new(),
            ]);
            let mut row = json!({"image": entry.name, "id": entry.id, "snapshot": snap.name, "snapshot_id": snap.id, "size": snap.size, "format": 2});
            if protected {
                row["protected"] = json!("true");
            }
            rows.push(row);
        }
    }
    if json {
        return print_formatted(args, &LS_SHAPE, &Value::Array(rows));
    }
    if images.is_empty() {
        return Ok(());
    }
    print(&table.render())
}

/// Opens a listed image read-only; None if it went away meanwhile (or is half-made), which
/// listings skip as `rbd ls -l` does.
async fn open_listed(
    io: &IoCtx,
    entry: &quarry_rbd::ImageEntry,
    what: &str,
) -> Result<Option<Image>, CliError> {
    let options = OpenOptions { read_only: true, ..Default::default() };
    match Image::open_by_id(io, &entry.id, &entry.name, options).await {
        Ok(image) => Ok(Some(image)),
        Err(e) if e.errno() == ErrorCode::ENOENT => Ok(None),
        Err(e) => Err(failed(what, &e)),
    }
}

/// A parent link with names resolved for display.
struct ParentName {
    pool: String,
    namespace: String,
    image: String,
    id: String,
    snap: String,
    overlap: u64,
}

impl ParentName {
    fn spec(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}@{}", self.pool, self.image, self.snap)
        } else {
            format!("{}/{}/{}@{}", self.pool, self.namespace, self.image, self.snap)
        }
    }
}

async fn parent_name(rados: &Rados, parent: Option<&ParentInfo>) -> Option<ParentName> {
    let parent = parent?;
    let map = rados.map();
    let pool = map
        .pools
        .get(&parent.spec.pool)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| parent.spec.pool.to_string());
    let io = rados.ioctx_by_id(parent.spec.pool).ok()?;
    let image = pool::image_name(&io, &parent.spec.image_id)
        .await
        .unwrap_or_else(|_| parent.spec.image_id.clone());
    let snap = match Image::open_by_id(
        &io,
        &parent.spec.image_id,
        &image,
        OpenOptions { read_only: true, ..Default::default() },
    )
    .await
    {
        Ok(img) => img
            .header()
            .await
            .snapshot(parent.spec.snap_id)
            .map(|s| s.name.clone())
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    Some(ParentName {
        pool,
        namespace: parent.spec.namespace.clone(),
        image,
        id: parent.spec.image_id.clone(),
        snap,
        overlap: parent.overlap,
    })
}

async fn info(args: &RbdArgs, rados: &Rados, spec: &Spec) -> Result<(), CliError> {
    let image = open_image(rados, spec, true).await?;
    let info = image.info().await;
    let parent = parent_name(rados, info.parent.as_ref()).await;
    let protected = match info.snap_id {
        Some(id) => {
            image.header().await.snapshot(id).map(|s| s.protection == Protection::Protected)
        }
        None => None,
    };
    if args.json()? {
        return print_formatted(args, &INFO_SHAPE, &info_json(&info, parent.as_ref(), protected));
    }
    print(&info_plain(&info, parent.as_ref(), protected))
}

fn info_plain(info: &ImageInfo, parent: Option<&ParentName>, protected: Option<bool>) -> String {
    let mut s = format!("rbd image '{}':\n", info.name);
    s.push_str(&format!("\tsize {} in {} objects\n", bytes_iec(info.size), info.object_count));
    s.push_str(&format!("\torder {} ({} objects)\n", info.order, bytes_iec(1 << info.order)));
    s.push_str(&format!("\tsnapshot_count: {}\n", info.snapshot_count));
    s.push_str(&format!("\tid: {}\n", info.id));
    s.push_str(&format!("\tblock_name_prefix: {}\n", info.block_name_prefix));
    s.push_str("\tformat: 2\n");
    s.push_str(&format!("\tfeatures: {}\n", features::names(info.features).join(", ")));
    s.push_str("\top_features: \n");
    s.push_str(&format!("\tflags: {}\n", flag_names(info.flags).join(", ")));
    s.push_str(&format!("\tcreate_timestamp: {}\n", ctime(info.create_timestamp.0)));
    s.push_str(&format!("\taccess_timestamp: {}\n", ctime(info.access_timestamp.0)));
    s.push_str(&format!("\tmodify_timestamp: {}\n", ctime(info.modify_timestamp.0)));
    if info.features & features::STRIPINGV2 != 0 {
        s.push_str(&format!("\tstripe unit: {}\n", bytes_iec(info.stripe_unit)));
        s.push_str(&format!("\tstripe count: {}\n", info.stripe_count));
    }
    if let Some(p) = protected {
        s.push_str(&format!("\tprotected: {}\n", if p { "True" } else { "False" }));
    }
    if let Some(p) = parent {
        s.push_str(&format!("\tparent: {}\n", p.spec()));
        s.push_str(&format!("\toverlap: {}\n", bytes_iec(p.overlap)));
    }
    s
}

fn flag_names(bits: u64) -> Vec<&'static str> {
    let mut out = Vec::new();
    if bits & quarry_rbd::flags::OBJECT_MAP_INVALID != 0 {
        out.push("object map invalid");
    }
    if bits & quarry_rbd::flags::FAST_DIFF_INVALID != 0 {
        out.push("fast diff invalid");
    }
    out
}

fn info_json(info: &ImageInfo, parent: Option<&ParentName>, protected: Option<bool>) -> Value {
    let mut v = json!({
        "name": info.name,
        "id": info.id,
        "size": info.size,
        "objects": info.object_count,
        "order": info.order,
        "object_size": 1u64 << info.order,
        "snapshot_count": info.snapshot_count,
        "block_name_prefix": info.block_name_prefix,
        "format": 2,
        "features": features::names(info.features),
        "op_features": Vec::<String>::new(),
        "flags": flag_names(info.flags),
        "create_timestamp": ctime(info.create_timestamp.0),
        "access_timestamp": ctime(info.access_timestamp.0),
        "modify_timestamp": ctime(info.modify_timestamp.0),
    });
    if info.features & features::STRIPINGV2 != 0 {
        v["stripe_unit"] = json!(info.stripe_unit);
        v["stripe_count"] = json!(info.stripe_count);
    }
    if let Some(p) = protected {
        v["protected"] = json!(if p { "true" } else { "false" });
    }
    if let Some(p) = parent {
        v["parent"] = json!({
            "pool": p.pool, "pool_namespace": p.namespace, "image": p.image, "id": p.id,
            "snapshot": p.snap, "trash": false, "overlap": p.overlap,
        });
    }
    v
}

async fn resize(args: &RbdArgs, rados: &Rados, spec: &Spec) -> Result<(), CliError> {
    let size = args.size()?.unwrap_or(0);
    let image = open_image(rados, spec, false).await?;
    if size < image.size().await && !args.allow_shrink {
        return Err(usage("shrinking an image is only allowed with the --allow-shrink flag"));
    }
    let mut progress = Progress::new("Resizing image", args.progress());
    let result = image.resize(size, |d, t| progress.update(d, t)).await;
    progress.finish(result.is_ok());
    result.map_err(|e| failed("resize error", &e))
}

async fn rm(args: &RbdArgs, rados: &Rados, spec: &Spec) -> Result<(), CliError> {
    let io = open_pool(rados, &spec.pool, &spec.namespace).await?;
    let id = pool::image_id(&io, &spec.image).await.map_err(|e| failed("delete error", &e))?;
    let mut progress = Progress::new("Removing image", args.progress());
    let result = pool::remove_image(&io, &spec.image, &id, |d, t| progress.update(d, t)).await;
    progress.finish(result.is_ok());
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == ErrorCode::ENOTEMPTY => Err(CliError::Usage {
            message: "rbd: image has snapshots - these must be deleted with 'rbd snap purge' before the image can be removed.".into(),
            status: 39,
        }),
        Err(e) if e.errno() == ErrorCode::EBUSY && e.reason().contains("watchers") => Err(CliError::Usage {
            message: "rbd: error: image still has watchers\nThis means the image is still open or the client using it crashed. Try again after closing/unmapping it or waiting 30s for the crashed client to timeout.".into(),
            status: 16,
        }),
        Err(e) => Err(failed("delete error", &e)),
    }
}

async fn snap_ls(args: &RbdArgs, rados: &Rados, spec: &Spec) -> Result<(), CliError> {
    let image = open_image(rados, spec, true).await?;
    let snaps = image.snapshots().await;
    if args.json()? {
        let rows: Vec<Value> = snaps
            .iter()
            .map(|s| json!({"id": s.id, "name": s.name, "size": s.size, "protected": if s.protection == Protection::Protected { "true" } else { "false" }, "timestamp": ctime(s.timestamp.0)}))
            .collect();
        return print_formatted(args, &SNAP_LS_SHAPE, &Value::Array(rows));
    }
    if snaps.is_empty() {
        return Ok(());
    }
    let mut table = Table::new(&[
        ("SNAPID", Align::Right),
        ("NAME", Align::Left),
        ("SIZE", Align::Right),
        ("PROTECTED", Align::Left),
        ("TIMESTAMP", Align::Left),
    ])
    .left_heads();
    for s in &snaps {
        let protected = if s.protection == Protection::Protected { "yes" } else { "" };
        table.row(vec![
            s.id.to_string(),
            s.name.clone(),
            bytes_iec(s.size),
            protected.into(),
            ctime(s.timestamp.0),
        ]);
    }
    print(&table.render())
}

async fn snap_purge(args: &RbdArgs, rados: &Rados, spec: &Spec) -> Result<(), CliError> {
    let image = open_image(rados, spec, false).await?;
    let snaps = image.snapshots().await;
    let mut protected = Vec::new();
    let mut progress = Progress::new("Removing all snapshots", args.progress());
    let total = snaps.len() as u64;
    for (i, snap) in snaps.iter().enumerate() {
        if snap.protection != Protection::Unprotected {
            protected.push(snap.name.clone());
            continue;
        }
        image.snap_remove(&snap.name).await.map_err(|e| failed("removing snaps failed", &e))?;
        progress.update(i as u64 + 1, total);
    }
    progress.finish(protected.is_empty());
    if !protected.is_empty() {
        // Ceph prints this and exits 0.
        eprintln!(
            "rbd: error removing snapshot(s) '{}', which {} protected - these must be unprotected with `rbd snap unprotect`.",
            protected.join(", "),
            if protected.len() == 1 { "is" } else { "are" }
        );
    }
    Ok(())
}

async fn clone(args: &RbdArgs, rados: &Rados, parent: &Spec, child: &Spec) -> Result<(), CliError> {
    let parent_io = open_pool(rados, &parent.pool, &parent.namespace).await?;
    let child_io = open_pool(rados, &child.pool, &child.namespace).await?;
    let source = Image::open(
        &parent_io,
        &parent.image,
        OpenOptions { snapshot: parent.snap.clone(), read_only: true, ..Default::default() },
    )
    .await
    .map_err(|e| failed("clone error", &e))?;
    let mut options = args.create_options(0)?;
    if args.image_feature.is_empty() {
        options.features = source.features().await | features::LAYERING;
        options.features &= !features::STRIPINGV2;
    }
    if args.order.is_none() && args.object_size.is_none() {
        options.order = source.info().await.order;
    }
    pool::clone(&source, &child_io, &child.image, &options, args.clone_format()?)
        .await
        .map(drop)
        .map_err(|e| failed("clone error", &e))
}

async fn children(args: &RbdArgs, rados: &Rados, spec: &Spec) -> Result<(), CliError> {
    let image = open_image(rados, spec, true).await?;
    let (parent_spec, _) =
        image.clone_source().await.map_err(|e| failed("listing children failed", &e))?;
    let kids = pool::children(image.ioctx(), &parent_spec)
        .await
        .map_err(|e| failed("listing children failed", &e))?;
    let map = rados.map();
    let mut rows = Vec::new();
    let mut lines = String::new();
    for kid in kids {
        let pool_name = map
            .pools
            .get(&kid.pool)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| kid.pool.to_string());
        let io = rados
            .ioctx_by_id(kid.pool)
            .map_err(|e| failed("listing children failed", &RbdError::from(e)))?;
        let name =
            pool::image_name(&io, &kid.image_id).await.unwrap_or_else(|_| kid.image_id.clone());
        lines.push_str(&format!("{pool_name}/{name}\n"));
        rows.push(json!({"pool": pool_name, "pool_namespace": kid.namespace, "image": name}));
    }
    if args.json()? {
        return print_formatted(args, &CHILDREN_SHAPE, &Value::Array(rows));
    }
    print(&lines)
}

async fn status(args: &RbdArgs, rados: &Rados, spec: &Spec) -> Result<(), CliError> {
    let image = open_image(rados, spec, true).await?;
    let header = quarry_rbd::names::header_object(image.id());
    let watchers = image
        .ioctx()
        .list_watchers(&header)
        .await
        .map_err(|e| failed("show status failed", &RbdError::from(e)))?;
    if args.json()? {
        let rows: Vec<Value> = watchers
            .iter()
            .map(|w| json!({"address": w.addr, "client": w.global_id, "cookie": w.cookie}))
            .collect();
        return print_formatted(args, &STATUS_SHAPE, &json!({"watchers": rows}));
    }
    if watchers.is_empty() {
        return print("Watchers: none\n");
    }
    let mut s = String::from("Watchers:\n");
    for w in &watchers {
        s.push_str(&format!("\twatcher={} client.{} cookie={}\n", w.addr, w.global_id, w.cookie));
    }
    print(&s)
}

async fn du(
    args: &RbdArgs,
    rados: &Rados,
    pool_name: &str,
    only: Option<&Spec>,
) -> Result<(), CliError> {
    let io = open_pool(rados, pool_name, args.namespace.as_deref().unwrap_or("")).await?;
    let entries = match only {
        Some(spec) => {
            let id = pool::image_id(&io, &spec.image)
                .await
                .map_err(|e| failed(&format!("error opening image {}", spec.image), &e))?;
            vec![quarry_rbd::ImageEntry { name: spec.image.clone(), id }]
        }
        None => pool::list(&io).await.map_err(|e| failed("du failed", &e))?,
    };
    let mut table =
        Table::new(&[("NAME", Align::Left), ("PROVISIONED", Align::Right), ("USED", Align::Right)])
            .left_heads();
    let mut rows = Vec::new();
    let (mut total_prov, mut total_used) = (0u64, 0u64);
    for entry in &entries {
        let Some(image) = open_listed(&io, entry, "du failed").await? else { continue };
        let info = image.info().await;
        let fast = info.features & features::FAST_DIFF != 0;
        if !fast {
            eprintln!(
                "warning: fast-diff map is not enabled for {}. operation may be slow.",
                entry.name
            );
        }
        let object_size = 1u64 << info.order;
        for snap in image.snapshots().await {
            if only.and_then(|s| s.snap.as_ref()).is_some_and(|s| *s != snap.name) {
                continue;
            }
            let used = used_bytes(&image, Some(snap.id), snap.size, object_size).await?;
            table.row(vec![
                format!("{}@{}", entry.name, snap.name),
                bytes_iec(snap.size),
                bytes_iec(used),
            ]);
            rows.push(json!({"name": entry.name, "id": entry.id, "snapshot": snap.name, "snapshot_id": snap.id, "provisioned_size": snap.size, "used_size": used}));
            total_prov += snap.size;
            total_used += used;
        }
        if only.is_some_and(|s| s.snap.is_some()) {
            continue;
        }
        let used = used_bytes(&image, None, info.size, object_size).await?;
        table.row(vec![entry.name.clone(), bytes_iec(info.size), bytes_iec(used)]);
        rows.push(json!({"name": entry.name, "id": entry.id, "provisioned_size": info.size, "used_size": used}));
        total_prov += info.size;
        total_used += used;
    }
    if args.json()? {
        return print_formatted(
            args,
            &DU_SHAPE,
            &json!({"images": rows, "total_provisioned_size": total_prov, "total_used_size": total_used}),
        );
    }
    if only.is_none() || entries.len() > 1 || rows.len() > 1 {
        table.row(vec!["<TOTAL>".into(), bytes_iec(total_prov), bytes_iec(total_used)]);
    }
    print(&table.render())
}

/// Bytes of `size` that changed in this snapshot (or the head) since the one before, with
/// fast-diff: objects in state EXISTS (not EXISTS_CLEAN) of its object map. Without an
/// object map: every object that exists, found by asking for each one.
async fn used_bytes(
    image: &Image,
    snap: Option<u64>,
    size: u64,
    object_size: u64,
) -> Result<u64, CliError> {
    let count = image.layout().await.object_count(size);
    if let Some(map) = image.object_map(snap).await.map_err(|e| failed("du failed", &e))? {
        // Each changed object counts with its part inside the image (the last one may be
        // cut by the size; with striping every object counts whole).
        let simple = image.layout().await.is_simple();
        let used = (0..count.min(map.object_count))
            .filter(|&k| map.get(k) == quarry_rbd::object_map::EXISTS)
            .map(|k| {
                if simple {
                    object_size.min(size.saturating_sub(k * object_size))
                } else {
                    object_size
                }
            })
            .sum();
        return Ok(used);
    }
    let header = image.header().await;
    let mut io = image.ioctx().clone();
    io.set_read_snap(snap.unwrap_or(quarry_types::SNAP_HEAD));
    let mut used = 0;
    for k in 0..count {
        let object = quarry_rbd::layout::data_object(&header.object_prefix, k);
        if let Ok(stat) = io.stat(&object).await {
            used += stat.size.min(object_size);
        }
    }
    Ok(used)
}

async fn diff(args: &RbdArgs, rados: &Rados, spec: &Spec) -> Result<(), CliError> {
    let image = open_image(rados, spec, true).await?;
    let from = match &args.from_snap {
        None => None,
        Some(name) => {
            let header = image.header().await;
            let snap = header
                .user_snapshot(name)
                .ok_or_else(|| failed("diff error", &RbdError::code(ErrorCode::ENOENT)))?;
            Some(snap.id)
        }
    };
    let size = image.size().await;
    let mut extents = Vec::new();
    image
        .diff_iterate(from, 0, size, true, |off, len, exists| {
            extents.push((off, len, exists));
            0
        })
        .await
        .map_err(|e| failed("diff error", &e))?;
    if args.json()? {
        let rows: Vec<Value> = extents
            .iter()
            .map(|(o, l, e)| json!({"offset": o, "length": l, "exists": if *e { "true" } else { "false" }}))
            .collect();
        return print_formatted(args, &DIFF_SHAPE, &Value::Array(rows));
    }
    let mut table =
        Table::new(&[("Offset", Align::Left), ("Length", Align::Left), ("Type", Align::Left)]);
    for (o, l, e) in &extents {
        table.row(vec![o.to_string(), l.to_string(), if *e { "data" } else { "zero" }.into()]);
    }
    print(&table.render())
}

/// `rbd bench`: Ceph's flags and output (a header line, one line per second, a summary).
async fn bench(args: &RbdArgs, rados: &Rados, spec: &Spec) -> Result<(), CliError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let size_of = |text: &Option<String>, default: u64, what: &str| -> Result<u64, CliError> {
        match text {
            None => Ok(default),
            Some(t) => {
                quarry_conf::parse_size(t).map_err(|_| usage(format!("invalid {what}: {t}")))
            }
        }
    };
    let io_size = size_of(&args.io_size, 4096, "io size")?;
    let total = size_of(&args.io_total, 1 << 30, "io total")?;
    let threads = args.io_threads.unwrap_or(16).max(1);
    let random = match args.io_pattern.as_deref() {
        None | Some("seq") | Some("sequential") => false,
        Some("rand") | Some("random") => true,
        Some(other) => return Err(usage(format!("invalid io pattern: {other}"))),
    };
    let (reads, writes) = match args.io_type.as_deref() {
        Some("read") => (true, false),
        Some("write") => (false, true),
        Some("readwrite") | Some("rw") => (true, true),
        other => return Err(usage(format!("invalid io type: {}", other.unwrap_or("")))),
    };
    let mix_read = args.rw_mix_read.unwrap_or(50).min(100);
    if io_size == 0 || io_size > (64 << 20) {
        return Err(usage("io size must be between 1 byte and 64 MiB"));
    }
    let image = open_image(rados, spec, !writes).await?;
    let size = image.size().await;
    if io_size > size {
        return Err(usage("io size is larger than the image"));
    }
    let type_name = match (reads, writes) {
        (true, false) => "read",
        (false, true) => "write",
        _ => "readwrite",
    };
    let pattern_name = if random { "random" } else { "sequential" };
    let mut header = format!(
        "bench  type {type_name} io_size {io_size} io_threads {threads} bytes {total} pattern {pattern_name}\n"
    );
    if reads && writes {
        header.push_str(&format!("  read_ratio {mix_read}\n"));
    }
    print(&format!("{header}  SEC       OPS   OPS/SEC   BYTES/SEC\n"))?;
    let ops_total = total.div_ceil(io_size);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let slots = size / io_size;
    let data = Bytes::from(vec![0xa5u8; io_size as usize]);
    let start = std::time::Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for t in 0..threads {
        let (image, next, done, data) = (image.clone(), next.clone(), done.clone(), data.clone());
        workers.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64 + 1);
            loop {
                let op = next.fetch_add(1, Ordering::Relaxed);
                if op >= ops_total {
                    return Ok::<(), RbdError>(());
                }
                let slot = if random { rng.gen_range(0..slots) } else { op % slots };
                let off = slot * io_size;
                let read = reads && (!writes || rng.gen_range(0..100) < mix_read);
                if read {
                    image.read(off, io_size).await?;
                } else {
                    image.write(off, data.clone()).await?;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut last = (0u64, std::time::Instant::now());
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    ticker.tick().await;
    let mut second = 0;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(failed("bench failed", &e)),
                Some(Err(e)) => return Err(failed("bench failed", &RbdError::refused(ErrorCode::EIO, e.to_string()))),
            },
            _ = ticker.tick() => {
                second += 1;
                let now_done = done.load(Ordering::Relaxed);
                let secs = last.1.elapsed().as_secs_f64().max(1e-9);
                let rate = (now_done - last.0) as f64 / secs;
                print(&format!("{second:>5}  {now_done:>8}  {rate:>8.2}  {:>10}/s\n", bytes_iec((rate * io_size as f64) as u64)))?;
                last = (now_done, std::time::Instant::now());
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    let ops = done.load(Ordering::Relaxed);
    let rate = ops as f64 / elapsed;
    print(&format!(
        "elapsed: {}   ops: {ops}   ops/sec: {}   bytes/sec: {}/s\n",
        elapsed as u64,
        crate::output::g6(rate),
        bytes_iec((rate * io_size as f64) as u64)
    ))
}

/// `rbd watch IMAGE`: watches the header (so `rbd status` lists this process) and prints
/// each notification as Ceph's tool does until a line or EOF on stdin.
async fn watch(rados: &Rados, spec: &Spec) -> Result<(), CliError> {
    use tokio::io::AsyncBufReadExt;
    let image = open_image(rados, spec, true).await?;
    let io = image.ioctx().clone();
    let header = quarry_rbd::names::header_object(image.id());
    let mut w =
        io.watch(&header, None).await.map_err(|e| failed("watch failed", &RbdError::from(e)))?;
    print("press enter to exit...\n")?;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    let mut enter = std::pin::pin!(stdin.read_line(&mut line));
    loop {
        tokio::select! {
            _ = &mut enter => break,
            event = w.next() => match event {
                Some(quarry_client::WatchEvent::Notify { notify_id, notifier_id, payload }) => {
                    let op = quarry_rbd::lock::ImageNotify::decode(&payload)
                        .map_or("Unknown", |n| n.op_name());
                    print(&format!(
                        "{} received notification: notify_id={notify_id}, cookie={}, notifier_id={notifier_id}, bl.length={}, notify_op={op}\n",
                        spec.image,
                        w.cookie(),
                        payload.len()
                    ))?;
                    let _ = io.notify_ack(w.cookie(), notify_id, b"").await;
                }
                Some(quarry_client::WatchEvent::Error(code)) => {
                    return Err(failed("watch failed", &RbdError::code(code)));
                }
                None => break,
            },
        }
    }
    let _ = io.unwatch(w.cookie()).await;
    Ok(())
}

async fn lock_ls(args: &RbdArgs, rados: &Rados, spec: &Spec) -> Result<(), CliError> {
    let image = open_image(rados, spec, true).await?;
    let info = image.lockers().await.map_err(|e| failed("listing locks failed", &e))?;
    if args.json()? {
        // Ceph's shape: one section per lock, named by its id (cookie).
        let locks: serde_json::Map<String, Value> = info
            .lockers
            .iter()
            .map(|l| (l.cookie.clone(), json!({"locker": l.locker, "address": l.addr})))
            .collect();
        return print_formatted(args, &LOCK_SHAPE, &Value::Object(locks));
    }
    if info.lockers.is_empty() {
        return Ok(());
    }
    let kind = match info.lock_type {
        Some(quarry_rbd::LockType::Shared) => "shared",
        _ => "exclusive",
    };
    let n = info.lockers.len();
    let mut out = format!(
        "There {} {n} {kind} lock{} on this image.\n",
        if n == 1 { "is" } else { "are" },
        if n == 1 { "" } else { "s" }
    );
    if kind == "shared" {
        out.push_str(&format!("Lock tag: {}\n", info.tag));
    }
    let mut table =
        Table::new(&[("Locker", Align::Left), ("ID", Align::Left), ("Address", Align::Left)])
            .left_heads();
    for l in &info.lockers {
        table.row(vec![l.locker.clone(), l.cookie.clone(), l.addr.clone()]);
    }
    out.push_str(&table.render());
    print(&out)
}

async fn trash_ls(args: &RbdArgs, rados: &Rados, pool_name: &str) -> Result<(), CliError> {
    let io = open_pool(rados, pool_name, args.namespace.as_deref().unwrap_or("")).await?;
    let items =
        pool::trash_list(&io).await.map_err(|e| failed("error listing image in trash", &e))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let status = |i: &quarry_rbd::TrashItem| {
        if i.entry.deferment_end_time.0 > now {
            format!("protected until {}", ctime(i.entry.deferment_end_time.0))
        } else {
            format!("expired at {}", ctime(i.entry.deferment_end_time.0))
        }
    };
    let source = |i: &quarry_rbd::TrashItem| match i.entry.source {
        quarry_rbd::TrashSource::User => "USER",
        quarry_rbd::TrashSource::Removing => "REMOVING",
    };
    if args.json()? {
        // Ceph's: id and name only without -l.
        let rows: Vec<Value> = items
            .iter()
            .map(|i| match args.long {
                false => json!({"id": i.id, "name": i.entry.name}),
                true => json!({"id": i.id, "name": i.entry.name, "source": source(i),
                       "deleted_at": ctime(i.entry.deletion_time.0), "status": status(i)}),
            })
            .collect();
        return print_formatted(args, &TRASH_SHAPE, &Value::Array(rows));
    }
    if !args.long {
        return print(
            &items.iter().map(|i| format!("{} {}\n", i.id, i.entry.name)).collect::<String>(),
        );
    }
    if items.is_empty() {
        return Ok(());
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("NAME", Align::Left),
        ("SOURCE", Align::Left),
        ("DELETED_AT", Align::Left),
        ("STATUS", Align::Left),
    ])
    .left_heads();
    for i in &items {
        table.row(vec![
            i.id.clone(),
            i.entry.name.clone(),
            source(i).into(),
            ctime(i.entry.deletion_time.0),
            status(i),
        ]);
    }
    print(&table.render())
}

/// Object requests an export or import keeps in flight (librbd's
/// `rbd_concurrent_management_ops` default).
const TRANSFER_IN_FLIGHT: usize = 10;

/// `rbd export`: only the extents that hold data (the object map, or a stat per object
/// without it) are read, up to [`TRANSFER_IN_FLIGHT`] at once; a file gets holes where the
/// image has none (it is sized first), stdout gets the zeros in order.
async fn export(args: &RbdArgs, rados: &Rados, spec: &Spec, path: &str) -> Result<(), CliError> {
    let image = open_image(rados, spec, true).await?;
    let size = image.size().await;
    let mut progress = Progress::new("Exporting image", args.progress() && path != "-");
    let mut file = None;
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if path == "-" {
        Box::new(tokio::io::stdout())
    } else {
        let opened =
            std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
                CliError::Usage {
                    message: format!(
                        "rbd: error opening {path}: ({}) {}",
                        e.raw_os_error().unwrap_or(5),
                        e
                    ),
                    status: status_of(ErrorCode(e.raw_os_error().unwrap_or(5))),
                }
            })?;
        opened.set_len(size).map_err(|e| CliError::io(path, e))?;
        file = Some(std::sync::Arc::new(opened));
        Box::new(tokio::io::sink())
    };
    // The extents with data, in order, cut into transfer chunks.
    let mut extents: Vec<(u64, u64)> = Vec::new();
    image
        .diff_iterate(None, 0, size, true, |off, len, exists| {
            if exists {
                let mut at = off;
                while at < off + len {
                    let piece = TRANSFER_CHUNK.min(off + len - at);
                    extents.push((at, piece));
                    at += piece;
                }
            }
            0
        })
        .await
        .map_err(|e| failed("export error", &e))?;
    let image = std::sync::Arc::new(image);
    let mut reads = extents.iter().copied().map(|(off, len)| {
        let image = image.clone();
        async move { image.read(off, len).await.map(|data| (off, data)) }
    });
    let mut in_flight = std::collections::VecDeque::new();
    let mut written = 0u64;
    loop {
        while in_flight.len() < TRANSFER_IN_FLIGHT {
            match reads.next() {
                Some(read) => in_flight.push_back(tokio::spawn(read)),
                None => break,
            }
        }
        let Some(next) = in_flight.pop_front() else { break };
        let (off, data) = next
            .await
            .map_err(|e| failed("export error", &RbdError::refused(ErrorCode::EIO, e.to_string())))?
            .map_err(|e| failed("export error", &e))?;
        let end = off + data.len() as u64;
        match &file {
            Some(file) => {
                let file = file.clone();
                tokio::task::spawn_blocking(move || {
                    std::os::unix::fs::FileExt::write_all_at(&*file, &data, off)
                })
                .await
                .map_err(|e| CliError::io(path, std::io::Error::other(e)))?
                .map_err(|e| CliError::io(path, e))?;
            }
            None => {
                write_zeros(&mut out, off - written).await.map_err(|e| CliError::io(path, e))?;
                out.write_all(&data).await.map_err(|e| CliError::io(path, e))?;
            }
        }
        written = end;
        progress.update(written, size);
    }
    if file.is_none() {
        write_zeros(&mut out, size - written).await.map_err(|e| CliError::io(path, e))?;
    }
    out.flush().await.map_err(|e| CliError::io(path, e))?;
    if let Some(file) = &file {
        file.sync_all().map_err(|e| CliError::io(path, e))?;
    }
    progress.finish(true);
    Ok(())
}

/// Writes `count` zero bytes.
async fn write_zeros(
    out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    mut count: u64,
) -> std::io::Result<()> {
    let zeros = [0u8; 64 << 10];
    while count > 0 {
        let n = count.min(zeros.len() as u64) as usize;
        out.write_all(&zeros[..n]).await?;
        count -= n as u64;
    }
    Ok(())
}

/// The data segments of a regular file (`SEEK_DATA`/`SEEK_HOLE`): its holes are never read.
/// A file system without them reports the whole file as one segment.
fn data_segments(file: &std::fs::File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let mut segments = Vec::new();
    let mut at = 0u64;
    while at < len {
        let start = match seek(file, SeekFrom::Data(at)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) if at == 0 => return Ok(vec![(0, len)]),
            Err(e) => return Err(e.into()),
        };
        let end = seek(file, SeekFrom::Hole(start)).map_err(std::io::Error::from)?.min(len);
        if end > start {
            segments.push((start, end - start));
        }
        at = end;
    }
    Ok(segments)
}

/// `rbd import`: a regular file's holes are skipped without reading them, blocks of zeros
/// in its data are not written (the image reads zeros there anyway), and up to
/// [`TRANSFER_IN_FLIGHT`] writes run at once. From stdin the image grows as data arrives.
async fn import(args: &RbdArgs, rados: &Rados, path: &str, spec: &Spec) -> Result<(), CliError> {
    let open_error = |e: std::io::Error| CliError::Usage {
        message: format!("rbd: error opening {path}: {}", ErrorCode(e.raw_os_error().unwrap_or(5))),
        status: status_of(ErrorCode(e.raw_os_error().unwrap_or(5))),
    };
    let (mut input, size, segments) = if path == "-" {
        (ImportInput::Stdin(tokio::io::stdin()), None, None)
    } else {
        let file = std::fs::File::open(path).map_err(open_error)?;
        let meta = file.metadata().map_err(|e| CliError::io(path, e))?;
        // A directory opens, but reading it fails: refuse it before the image is created.
        if meta.is_dir() {
            return Err(open_error(std::io::Error::from_raw_os_error(21)));
        }
        let len = meta.len();
        let segments = if meta.is_file() {
            Some(data_segments(&file, len).map_err(|e| CliError::io(path, e))?)
        } else {
            None
        };
        (ImportInput::File(tokio::fs::File::from_std(file)), Some(len), segments)
    };
    let io = open_pool(rados, &spec.pool, &spec.namespace).await?;
    let options = args.create_options(size.unwrap_or(0))?;
    pool::create(&io, &spec.image, &options).await.map_err(|e| failed("import failed", &e))?;
    let image = std::sync::Arc::new(open_image(rados, spec, false).await?);
    let mut progress = Progress::new("Importing image", args.progress() && size.is_some());
    let mut writes = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; TRANSFER_CHUNK as usize];
    // The ranges to read: the file's data segments, or everything until EOF.
    let ranges = segments.unwrap_or_else(|| vec![(0, u64::MAX)]);
    for (segment_start, segment_len) in ranges {
        if let ImportInput::File(_) = input {
            // (Finding the segments moved the file's position.)
            input.seek_to(segment_start).await.map_err(|e| CliError::io(path, e))?;
        }
        let mut off = segment_start;
        let segment_end = segment_start.saturating_add(segment_len);
        while off < segment_end {
            let want = (segment_end - off).min(buf.len() as u64) as usize;
            let mut filled = 0;
            while filled < want {
                let n =
                    input.read(&mut buf[filled..want]).await.map_err(|e| CliError::io(path, e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            if size.is_none() {
                // From stdin the size is known only as data arrives: grow as we go (after
                // the writes in flight, which a resize would otherwise race).
                drain_writes(&mut writes).await?;
                image
                    .resize(off + filled as u64, |_, _| {})
                    .await
                    .map_err(|e| failed("import failed", &e))?;
            }
            let data = &buf[..filled];
            let mut run_start: Option<usize> = None;
            let mut pieces = Vec::new();
            for (i, block) in data.chunks(4096).enumerate() {
                let zero = block.iter().all(|&b| b == 0);
                match (zero, run_start) {
                    (false, None) => run_start = Some(i * 4096),
                    (true, Some(start)) => {
                        pieces.push((start, i * 4096));
                        run_start = None;
                    }
                    _ => {}
                }
            }
            if let Some(start) = run_start {
                pieces.push((start, filled));
            }
            for (start, end) in pieces {
                while writes.len() >= TRANSFER_IN_FLIGHT {
                    join_write(&mut writes).await?;
                }
                let piece = Bytes::copy_from_slice(&data[start..end]);
                let image = image.clone();
                let at = off + start as u64;
                writes.spawn(async move { image.write(at, piece).await });
            }
            off += filled as u64;
            if let Some(total) = size {
                progress.update(off, total);
            }
            if filled < want {
                break;
            }
        }
    }
    drain_writes(&mut writes).await?;
    progress.finish(true);
    Ok(())
}

/// What `rbd import` reads: stdin, or a file it can seek in (over holes).
enum ImportInput {
    Stdin(tokio::io::Stdin),
    File(tokio::fs::File),
}

impl ImportInput {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ImportInput::Stdin(stdin) => stdin.read(buf).await,
            ImportInput::File(file) => file.read(buf).await,
        }
    }

    async fn seek_to(&mut self, at: u64) -> std::io::Result<()> {
        use tokio::io::AsyncSeekExt;
        match self {
            ImportInput::Stdin(_) => Err(std::io::Error::from_raw_os_error(29)),
            ImportInput::File(file) => file.seek(std::io::SeekFrom::Start(at)).await.map(drop),
        }
    }
}

/// Waits for one write of an import.
async fn join_write(
    writes: &mut tokio::task::JoinSet<quarry_rbd::RbdResult<()>>,
) -> Result<(), CliError> {
    match writes.join_next().await {
        Some(Ok(Ok(()))) | None => Ok(()),
        Some(Ok(Err(e))) => Err(failed("import failed", &e)),
        Some(Err(e)) => {
            Err(failed("import failed", &RbdError::refused(ErrorCode::EIO, e.to_string())))
        }
    }
}

/// Waits for every write of an import in flight.
async fn drain_writes(
    writes: &mut tokio::task::JoinSet<quarry_rbd::RbdResult<()>>,
) -> Result<(), CliError> {
    while !writes.is_empty() {
        join_write(writes).await?;
    }
    Ok(())
}

/// Opens `path` for a new file (Ceph's tools refuse to overwrite), or stdout for `-`.
async fn create_output(
    path: &str,
) -> Result<Box<dyn tokio::io::AsyncWrite + Unpin + Send>, CliError> {
    if path == "-" {
        return Ok(Box::new(tokio::io::BufWriter::new(tokio::io::stdout())));
    }
    let file =
        tokio::fs::OpenOptions::new().write(true).create_new(true).open(path).await.map_err(
            |e| {
                let code = ErrorCode(e.raw_os_error().unwrap_or(5));
                CliError::Usage {
                    message: format!("rbd: error opening {path}: {code}"),
                    status: status_of(code),
                }
            },
        )?;
    Ok(Box::new(tokio::io::BufWriter::new(file)))
}

/// Opens `path` for reading (stdin for `-`), with its size when it is a file.
async fn open_input(
    path: &str,
) -> Result<(Box<dyn tokio::io::AsyncRead + Unpin + Send>, Option<u64>), CliError> {
    if path == "-" {
        return Ok((Box::new(tokio::io::BufReader::new(tokio::io::stdin())), None));
    }
    let file = tokio::fs::File::open(path).await.map_err(|e| {
        let code = ErrorCode(e.raw_os_error().unwrap_or(5));
        CliError::Usage {
            message: format!("rbd: error opening {path}: {code}"),
            status: status_of(code),
        }
    })?;
    let len = file.metadata().await.map_err(|e| CliError::io(path, e))?.len();
    Ok((Box::new(tokio::io::BufReader::new(file)), Some(len)))
}

/// `rbd export-diff [--from-snap S] [--whole-object] IMAGE[@SNAP] PATH|-` (Ceph's "rbd diff
/// v1" stream; extents are whole objects with or without `--whole-object`).
async fn export_diff(
    args: &RbdArgs,
    rados: &Rados,
    spec: &Spec,
    path: &str,
) -> Result<(), CliError> {
    let image = open_image(rados, spec, true).await?;
    let mut out = create_output(path).await?;
    let mut progress = Progress::new("Exporting image", args.progress() && path != "-");
    let result =
        quarry_rbd::diff::export_diff(&image, args.from_snap.as_deref(), &mut out, |d, t| {
            progress.update(d, t)
        })
        .await;
    progress.finish(result.is_ok());
    if result.is_err() && path != "-" {
        let _ = tokio::fs::remove_file(path).await;
    }
    result.map_err(|e| failed("export-diff error", &e))
}

/// `rbd import-diff PATH|- IMAGE`: applies the diff to the head, then creates its end
/// snapshot.
async fn import_diff(
    args: &RbdArgs,
    rados: &Rados,
    path: &str,
    spec: &Spec,
) -> Result<(), CliError> {
    let (input, size) = open_input(path).await?;
    let image = open_image(rados, spec, false).await?;
    let mut progress = Progress::new("Importing image diff", args.progress() && size.is_some());
    let result =
        quarry_rbd::diff::import_diff(&image, input, size, |d, t| progress.update(d, t)).await;
    progress.finish(result.is_ok());
    result.map_err(|e| failed("import-diff failed", &e))
}

/// `rbd merge-diff FIRST SECOND PATH|-` (FIRST may be `-`).
async fn merge_diff(args: &RbdArgs, first: &str, second: &str, path: &str) -> Result<(), CliError> {
    if second == "-" {
        return Err(usage("the second diff cannot be read from stdin"));
    }
    let (a, _) = open_input(first).await?;
    let (b, _) = open_input(second).await?;
    let mut out = create_output(path).await?;
    let progress = Progress::new("Merging image diff", args.progress() && path != "-");
    let result = quarry_rbd::diff::merge_diff(a, b, &mut out).await;
    progress.finish(result.is_ok());
    if result.is_err() && path != "-" {
        let _ = tokio::fs::remove_file(path).await;
    }
    result.map_err(|e| failed("merge-diff error", &e))
}
