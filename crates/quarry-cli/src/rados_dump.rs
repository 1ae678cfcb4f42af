//! `rados export [FILE|-]`, `rados import [--dry-run] [--no-overwrite] FILE|-` and
//! `rados append OBJ FILE|-`: moving whole pools and object data in and out, with Ceph's
//! output lines (`Importing pool`, `Write #…#`, `***Overwrite*** #…#`, `Skipping existing
//! #…#`). The file format is [`crate::pool_dump`].
//!
//! An import reads the whole file once before it changes anything: a truncated or corrupt
//! export is refused with nothing written (Ceph's importer writes the objects before the
//! damage). Standard input is spooled to an unlinked temporary file for that. Each object
//! is then written as Ceph's importer writes it: created exclusively (an existing one is
//! removed first, or skipped with `--no-overwrite`), its data, xattrs, omap header and
//! entries. Only heads are imported (snapshot clones in a PG export are skipped, as Ceph
//! does).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};

use bytes::Bytes;
use tokio::io::AsyncRead;

use quarry_client::IoCtx;
use quarry_types::{ErrorCode, ObjectOp, OpOutput, Payload};

use crate::error::CliError;
use crate::output;
use crate::pool_dump::{
    DumpError, DumpReader, DumpWriter, Item, ObjectId, DATA_SECTION_BYTES, OMAP_SECTION_ENTRIES,
};

fn errno_of(e: &std::io::Error) -> ErrorCode {
    ErrorCode(e.raw_os_error().unwrap_or(5))
}

fn print(text: &str) -> Result<(), CliError> {
    output::stdout_bytes(text.as_bytes()).map_err(|e| CliError::io("<stdout>", e))
}

/// `rados export [FILE]`: every object of every namespace of the pool (no FILE or `-`:
/// standard output).
pub async fn export(io: &IoCtx, file: Option<&str>) -> Result<(), CliError> {
    let out: Box<dyn Write + Send> = match file {
        None | Some("-") => Box::new(std::io::stdout()),
        Some(path) => Box::new(
            File::create(path)
                .map_err(|e| CliError::rados_op(format!("Error opening '{path}'"), errno_of(&e)))?,
        ),
    };
    let target = file.unwrap_or("-").to_string();
    let written =
        |e: std::io::Error| CliError::rados_op(format!("error writing {target}"), errno_of(&e));
    let objects = io
        .list_objects_all()
        .await
        .map_err(|e| CliError::rados_op("error listing objects", e.errno()))?;
    let mut w = DumpWriter::new(BufWriter::with_capacity(1 << 20, out)).map_err(written)?;
    for (namespace, name) in objects {
        let mut ctx = io.clone();
        ctx.set_namespace(&namespace).map_err(|e| {
            CliError::rados_op(format!("error setting namespace {namespace}"), e.errno())
        })?;
        export_object(&ctx, &name, &mut w).await?;
    }
    w.finish().map_err(written)?;
    Ok(())
}

async fn export_object<W: Write>(
    io: &IoCtx,
    name: &str,
    w: &mut DumpWriter<W>,
) -> Result<(), CliError> {
    let failed = |what: &str, e: quarry_client::ClientError| {
        CliError::rados_op(format!("error getting {what} {}/{name}", io.pool_name()), e.errno())
    };
    let written = |e: std::io::Error| CliError::rados_op("error writing the export", errno_of(&e));
    // An object removed since the listing is left out.
    match io.stat(name).await {
        Ok(_) => {}
        Err(e) if e.errno() == ErrorCode::ENOENT => return Ok(()),
        Err(e) => return Err(failed("stat of", e)),
    }
    w.object_begin(io.namespace(), name).map_err(written)?;
    let mut offset = 0u64;
    loop {
        let data = io
            .read(name, offset, DATA_SECTION_BYTES as u64)
            .await
            .map_err(|e| failed("data of", e))?;
        if data.is_empty() {
            break;
        }
        w.data(offset, &data).map_err(written)?;
        offset += data.len() as u64;
        if data.len() < DATA_SECTION_BYTES {
            break;
        }
    }
    let xattrs = io.getxattrs(name).await.map_err(|e| failed("xattrs of", e))?;
    w.attrs(&xattrs).map_err(written)?;
    let header = match io.exec(name, vec![ObjectOp::OmapGetHeader]).await {
        Ok(mut out) => match out.pop() {
            Some(OpOutput::OmapHeader(h)) => h,
            _ => Bytes::new(),
        },
        Err(e) => return Err(failed("omap header of", e)),
    };
    w.omap_header(&header).map_err(written)?;
    let mut start_after = String::new();
    loop {
        let (vals, more) = io
            .omap_get_vals(name, &start_after, "", OMAP_SECTION_ENTRIES)
            .await
            .map_err(|e| failed("omap of", e))?;
        let Some(last) = vals.keys().next_back().cloned() else { break };
        w.omap(&vals).map_err(written)?;
        if !more {
            break;
        }
        start_after = last;
    }
    w.object_end().map_err(written)
}

/// Opens the export to import: a file, or standard input spooled to an unlinked temporary
/// file (so it can be read twice).
fn open_input(file: &str) -> Result<File, CliError> {
    if file != "-" {
        let f = File::open(file)
            .map_err(|e| CliError::rados_op(format!("Error opening '{file}'"), errno_of(&e)))?;
        if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(CliError::rados_op(format!("Error opening '{file}'"), ErrorCode::EISDIR));
        }
        return Ok(f);
    }
    let mut spool = tempfile::tempfile()
        .map_err(|e| CliError::rados_op("error creating a temporary file", errno_of(&e)))?;
    std::io::copy(&mut std::io::stdin().lock(), &mut spool)
        .map_err(|e| CliError::rados_op("error reading standard input", errno_of(&e)))?;
    spool.rewind().map_err(|e| CliError::rados_op("error reading standard input", errno_of(&e)))?;
    Ok(spool)
}

fn refused(file: &str, e: DumpError) -> CliError {
    match e {
        DumpError::Io(e) => CliError::rados_op(format!("error reading {file}"), errno_of(&e)),
        other => CliError::rados_op(
            format!("{other}; nothing was imported\nerror from import"),
            ErrorCode::EFAULT,
        ),
    }
}

/// Reads the whole export, checking it: the number of objects in it.
fn validate(input: &mut File, file: &str) -> Result<u64, CliError> {
    let mut reader = DumpReader::new(BufReader::with_capacity(1 << 20, &mut *input))
        .map_err(|e| refused(file, e))?;
    let mut objects = 0;
    loop {
        match reader.next_item().map_err(|e| refused(file, e))? {
            Item::End => break,
            Item::ObjectBegin(_) => objects += 1,
            _ => {}
        }
    }
    input
        .rewind()
        .map_err(|e| CliError::rados_op(format!("error reading {file}"), errno_of(&e)))?;
    Ok(objects)
}

/// `rados import [--dry-run] [--no-overwrite] FILE|-`.
pub async fn import(
    io: &IoCtx,
    file: &str,
    dry_run: bool,
    no_overwrite: bool,
) -> Result<(), CliError> {
    let mut input = open_input(file)?;
    validate(&mut input, file)?;
    let mut reader =
        DumpReader::new(BufReader::with_capacity(1 << 20, input)).map_err(|e| refused(file, e))?;
    print("Importing pool\n")?;
    loop {
        match reader.next_item().map_err(|e| refused(file, e))? {
            Item::End => return Ok(()),
            Item::ObjectBegin(id) => {
                import_object(io, &id, &mut reader, file, dry_run, no_overwrite).await?
            }
            other => {
                // validate() has seen the same file in order: only objects come here.
                return Err(refused(
                    file,
                    DumpError::Malformed { at: 0, what: format!("unexpected {other:?}") },
                ));
            }
        }
    }
}

async fn import_object<R: Read>(
    io: &IoCtx,
    id: &ObjectId,
    reader: &mut DumpReader<R>,
    file: &str,
    dry_run: bool,
    no_overwrite: bool,
) -> Result<(), CliError> {
    let mut ctx = io.clone();
    ctx.set_namespace(&id.namespace).map_err(|e| {
        CliError::rados_op(format!("error setting namespace {}", id.namespace), e.errno())
    })?;
    let name = id.name.as_str();
    let failed = |what: &str, e: quarry_client::ClientError| {
        CliError::rados_op(format!("{what} failed for {id}"), e.errno())
    };
    let mut skip = dry_run;
    let msg = if !id.is_head() {
        skip = true;
        "Skipping non-head for"
    } else if dry_run {
        match ctx.stat(name).await {
            Ok(_) if no_overwrite => "Skipping existing",
            Ok(_) => "***Overwrite***",
            Err(e) if e.errno() == ErrorCode::ENOENT => "Write",
            Err(e) => return Err(failed("stat", e)),
        }
    } else {
        match ctx.create(name, true).await {
            Ok(()) => "Write",
            Err(e) if e.errno() == ErrorCode::EEXIST && no_overwrite => {
                skip = true;
                "Skipping existing"
            }
            Err(e) if e.errno() == ErrorCode::EEXIST => {
                ctx.remove(name).await.map_err(|e| failed("remove", e))?;
                ctx.create(name, true).await.map_err(|e| failed("create", e))?;
                "***Overwrite***"
            }
            Err(e) => return Err(failed("create", e)),
        }
    };
    print(&format!("{msg} {id}\n"))?;
    loop {
        let item = reader.next_item().map_err(|e| refused(file, e))?;
        if skip {
            if item == Item::ObjectEnd {
                return Ok(());
            }
            continue;
        }
        match item {
            Item::ObjectEnd => return Ok(()),
            Item::Data { offset, data } => {
                let op = ObjectOp::Write { off: offset, data: Payload::new(data) };
                ctx.exec(name, vec![op]).await.map_err(|e| failed("write", e))?;
            }
            Item::Attrs(stored) => {
                // User xattrs are stored `_NAME`; `_` alone and names without it are the
                // OSD's own (object info, snapset) and are not restored (as Ceph does).
                let ops: Vec<ObjectOp> = stored
                    .into_iter()
                    .filter_map(|(k, value)| {
                        let user = k.strip_prefix('_').filter(|n| !n.is_empty())?;
                        Some(ObjectOp::SetXattr { name: user.to_string(), value })
                    })
                    .collect();
                if !ops.is_empty() {
                    ctx.exec(name, ops).await.map_err(|e| failed("setxattr", e))?;
                }
            }
            Item::OmapHeader(header) => {
                if !header.is_empty() {
                    let op = ObjectOp::OmapSetHeader { header };
                    ctx.exec(name, vec![op]).await.map_err(|e| failed("omap_set_header", e))?;
                }
            }
            Item::Omap(vals) => {
                ctx.omap_set(name, vals).await.map_err(|e| failed("omap_set", e))?;
            }
            Item::ObjectBegin(_) | Item::End => {
                return Err(refused(
                    file,
                    DumpError::Malformed { at: 0, what: "object without its end".into() },
                ));
            }
        }
    }
}

/// `rados append OBJ FILE|-`: the file's bytes are added at the object's end, 4 MiB at a
/// time, each piece atomically (the `data.append` method: a concurrent append never
/// overwrites this one). An empty file creates the object.
pub async fn append(io: &IoCtx, obj: &str, file: &str, op_size: usize) -> Result<(), CliError> {
    let what = || format!("error appending {}/{obj}", io.pool_name());
    let read_failed = |e: std::io::Error| {
        CliError::rados_op(format!("error reading input file {file}\n{}", what()), errno_of(&e))
    };
    let mut input: Box<dyn AsyncRead + Unpin + Send> = if file == "-" {
        Box::new(tokio::io::stdin())
    } else {
        let f = tokio::fs::File::open(file).await.map_err(|e| {
            CliError::rados_op(format!("error reading input file {file}"), errno_of(&e))
        })?;
        Box::new(f)
    };
    let mut buf = vec![0u8; op_size];
    let mut first = true;
    loop {
        let n = crate::rados::read_full(&mut input, &mut buf).await.map_err(read_failed)?;
        if n == 0 && !first {
            return Ok(());
        }
        first = false;
        let op = quarry_cls::data::append_op(&buf[..n]);
        io.exec(obj, vec![op]).await.map_err(|e| CliError::rados_op(what(), e.errno()))?;
        if n < op_size {
            return Ok(());
        }
    }
}
