//! `GET /v1/batches/{id}/diff` and `GET /v1/worlds/{id}/diff`: what a kept world changed, as the
//! fs_diff with review flags (JSON) or as text (`full`, `stat`,
//! `name-status`). The text shows the host's version of changed files
//! beside the world's: a caller other than root is shown only host files
//! it could read itself (a file its world deleted, say, which the world
//! could remove from a directory it may write without being able to read
//! it); the others are withheld as the host's secrets are.

use super::batches::abs_paths;
use super::{need_role, visible_batch, App, Id, Query};
use crate::error::ApiError;
use crate::identity::Caller;
use axum::extract::{Extension, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use cloche_review::render::{self, Contents, Format, RenderOptions};
use cloche_service::review::{abs_bytes, diff_json, review_of, WorldContents};
use cloche_service::HostUser;
use std::os::unix::ffi::OsStrExt;

/// `GET /v1/batches/{id}/diff[?format=json|full|stat|name-status][&path=P...][&touched=true][&color=true]`
/// (`color`: the text with a terminal's colours, as `cloche diff` prints it).
pub async fn diff(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Id(id): Id,
    uri: Uri,
) -> Result<Response, ApiError> {
    review(app, c, id, uri, |ctx, c, id| visible_batch(ctx, c, id).map(drop)).await
}

/// `GET /v1/worlds/{id}/diff[?...]`: the same for a kept world the caller
/// may see (a session's world, continued by runs).
pub async fn world_diff(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Id(id): Id,
    uri: Uri,
) -> Result<Response, ApiError> {
    review(app, c, id, uri, |ctx, c, id| super::other::visible_world(ctx, c, id).map(drop)).await
}

async fn review(
    app: App,
    c: Caller,
    id: String,
    uri: Uri,
    visible: fn(&cloche_service::Context, &Caller, &str) -> Result<(), ApiError>,
) -> Result<Response, ApiError> {
    need_role(&c)?;
    let q = Query::parse(&uri, &["format", "path", "touched", "color"])?;
    let format = match q.get("format").unwrap_or("json") {
        "json" => None,
        "full" => Some(Format::Full),
        "stat" => Some(Format::Stat),
        "name-status" => Some(Format::NameStatus),
        f => return Err(ApiError::bad_request(format!("format={f:?}: json, full, stat or name-status"))),
    };
    let paths = abs_paths(&q.all("path").into_iter().map(str::to_string).collect::<Vec<_>>(), "path")?;
    let (touched, color) = (q.flag("touched")?, q.flag("color")?);
    let out = app
        .pool
        .run(move |ctx| {
            visible(ctx, &c, &id)?;
            let t = ctx.review_target(&id)?;
            let paths: Vec<Vec<u8>> = paths.iter().map(|p| abs_bytes(p)).collect::<Result<_, _>>()?;
            let review = review_of(&t, !matches!(format, Some(Format::Stat | Format::NameStatus)))?;
            let Some(format) = format else { return Ok(Err(diff_json(&t, &review, &paths)?)) };
            let opts = RenderOptions { format, color, paths, touched, ..RenderOptions::default() };
            let contents = AsCaller { inner: WorldContents::new(&t.world, &t.secrets), user: c.host_user() };
            let mut text = Vec::new();
            render::render(&mut text, &review, &contents, &opts)
                .map_err(|e| ApiError::internal(format!("diff: {e}")))?;
            Ok(Ok(text))
        })
        .await?;
    match out {
        Err(v) => Ok((StatusCode::OK, axum::Json(v)).into_response()),
        Ok(text) => Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()),
    }
}

/// A world's contents as a caller may see them: the host's version of a
/// path only when the caller could read it (asked of the kernel with its
/// identity, on the calling thread).
struct AsCaller<'w> {
    inner: WorldContents<'w>,
    user: HostUser,
}

impl AsCaller<'_> {
    fn may_read(&self, path: &[u8]) -> bool {
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
        self.user.is_root() || self.user.may(p, libc::R_OK).unwrap_or(false)
    }
}

impl Contents for AsCaller<'_> {
    fn world(&self, path: &[u8], limit: u64) -> std::io::Result<Option<Vec<u8>>> {
        self.inner.world(path, limit)
    }

    fn base(&self, path: &[u8], limit: u64) -> std::io::Result<Option<Vec<u8>>> {
        if self.withheld(path) {
            return Ok(None);
        }
        self.inner.base(path, limit)
    }

    fn withheld(&self, path: &[u8]) -> bool {
        self.inner.withheld(path) || (self.host_has(path) && !self.may_read(path))
    }
}

impl AsCaller<'_> {
    /// Whether the host has a regular file there (a missing one hides nothing).
    fn host_has(&self, path: &[u8]) -> bool {
        std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(path)).is_ok_and(|m| m.is_file())
    }
}
