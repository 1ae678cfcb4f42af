//! errno names as Ceph's tools print them (`Error ENOENT: ...`).

use quarry_types::ErrorCode;

/// The symbolic name of an errno as `ceph` prints it in `Error ENOENT: ...`.
pub fn errno_name(code: ErrorCode) -> String {
    let name = match code.0 {
        1 => "EPERM",
        2 => "ENOENT",
        5 => "EIO",
        6 => "ENXIO",
        11 => "EAGAIN",
        13 => "EACCES",
        16 => "EBUSY",
        17 => "EEXIST",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        24 => "EMFILE",
        27 => "EFBIG",
        28 => "ENOSPC",
        30 => "EROFS",
        34 => "ERANGE",
        36 => "ENAMETOOLONG",
        38 => "ENOSYS",
        61 => "ENODATA",
        71 => "EPROTO",
        90 => "EMSGSIZE",
        95 => "EOPNOTSUPP",
        107 => "ENOTCONN",
        108 => "ESHUTDOWN",
        110 => "ETIMEDOUT",
        122 => "EDQUOT",
        125 => "ECANCELED",
        n => return format!("Unknown({n})"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(errno_name(ErrorCode::EACCES), "EACCES");
        assert_eq!(errno_name(ErrorCode::ENOENT), "ENOENT");
        assert_eq!(errno_name(ErrorCode::EISDIR), "EISDIR");
        assert_eq!(errno_name(ErrorCode(4242)), "Unknown(4242)");
    }
}
