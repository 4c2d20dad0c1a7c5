//! Unit tests of the id mapping: ranges, owners, ACLs, capabilities and
//! the subid files.

use std::path::Path;

use super::subid::{self, SubidError};
use super::*;

fn root(uid: u32, gid: u32) -> RemapRoot {
    RemapRoot { uid, gid }
}

fn dockremap() -> IdMap {
    IdMap::single(root(100000, 100000), 65536).unwrap()
}

fn to_host() -> IdShift {
    IdShift::new(dockremap(), Direction::ToHost)
}

fn to_container() -> IdShift {
    IdShift::new(dockremap(), Direction::ToContainer)
}

/// An ACL xattr value: version 2, then (tag, perm, id) entries.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

const UNDEFINED: u32 = u32::MAX;

fn cap_v2(effective: bool) -> Vec<u8> {
    let magic = 0x0200_0000u32 | u32::from(effective);
    let mut v = magic.to_le_bytes().to_vec();
    // cap_net_bind_service (10) permitted, nothing inheritable, high words 0.
    v.extend_from_slice(&(1u32 << 10).to_le_bytes());
    v.extend_from_slice(&[0; 12]);
    v
}

fn cap_v3(effective: bool, rootid: u32) -> Vec<u8> {
    let mut v = cap_v2(effective);
    let magic = 0x0300_0000u32 | u32::from(effective);
    v[..4].copy_from_slice(&magic.to_le_bytes());
    v.extend_from_slice(&rootid.to_le_bytes());
    v
}

#[test]
fn owners_shift_both_ways_and_round_trip() {
    let (mut uid, mut gid) = (999, 33);
    to_host().apply(&mut uid, &mut gid, &mut []).unwrap();
    assert_eq!((uid, gid), (100999, 100033));
    to_container().apply(&mut uid, &mut gid, &mut []).unwrap();
    assert_eq!((uid, gid), (999, 33));
}

#[test]
fn several_ranges_concatenate_in_order() {
    let map = IdMap::new(&[(100000, 10), (300000, 5)], &[(200000, 15)], "test".into()).unwrap();
    let up = IdShift::new(map.clone(), Direction::ToHost);
    assert_eq!(up.id(IdKind::Uid, 9).unwrap(), 100009);
    assert_eq!(up.id(IdKind::Uid, 10).unwrap(), 300000);
    assert_eq!(up.id(IdKind::Uid, 14).unwrap(), 300004);
    assert!(up.id(IdKind::Uid, 15).is_err());
    assert_eq!(up.id(IdKind::Gid, 14).unwrap(), 200014);
    let down = IdShift::new(map, Direction::ToContainer);
    assert_eq!(down.id(IdKind::Uid, 300004).unwrap(), 14);
    assert!(down.id(IdKind::Uid, 100010).is_err());
}

#[test]
fn an_id_outside_the_range_is_an_error_that_changes_nothing() {
    let (mut uid, mut gid) = (0, 0);
    let mut xattrs = vec![(ACL_ACCESS.to_vec(), acl(&[(ACL_USER, 6, 5)]))];
    let err = to_container()
        .apply(&mut uid, &mut gid, &mut xattrs)
        .unwrap_err();
    assert!(
        matches!(
            err,
            IdError::NotSeenByContainer {
                id: 0,
                kind: IdKind::Uid,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("owner uid 0 is outside"), "{text}");
    assert!(text.contains("100000-165535"), "{text}");
    assert_eq!((uid, gid), (0, 0));

    // The owner maps, the ACL entry does not: nothing changes either.
    let (mut uid, mut gid) = (100000, 100000);
    let before = xattrs.clone();
    let err = to_container()
        .apply(&mut uid, &mut gid, &mut xattrs)
        .unwrap_err();
    assert!(err.to_string().contains("ACL user entry uid 5"), "{err}");
    assert_eq!((uid, gid, &xattrs), (100000, 100000, &before));

    let err = to_host().id(IdKind::Gid, 65536).unwrap_err();
    assert!(
        err.to_string().contains("group gid 65536 has no host id"),
        "{err}"
    );
    assert!(err.to_string().contains("usermod --add-subuids"), "{err}");
}

#[test]
fn acl_user_and_group_entries_shift_and_the_others_stay() {
    let value = acl(&[
        (0x01, 7, UNDEFINED), // USER_OBJ
        (ACL_USER, 6, 1234),
        (0x04, 5, UNDEFINED), // GROUP_OBJ
        (ACL_GROUP, 5, 2345),
        (0x10, 7, UNDEFINED), // MASK
        (0x20, 4, UNDEFINED), // OTHER
    ]);
    let up = to_host().xattr(ACL_DEFAULT, &value).unwrap().unwrap();
    assert_eq!(
        up,
        acl(&[
            (0x01, 7, UNDEFINED),
            (ACL_USER, 6, 101234),
            (0x04, 5, UNDEFINED),
            (ACL_GROUP, 5, 102345),
            (0x10, 7, UNDEFINED),
            (0x20, 4, UNDEFINED),
        ])
    );
    assert_eq!(
        to_container().xattr(ACL_ACCESS, &up).unwrap().unwrap(),
        value
    );
}

#[test]
fn a_malformed_acl_is_refused() {
    let mut short = acl(&[(ACL_USER, 6, 1)]);
    short.pop();
    assert!(matches!(
        to_host().xattr(ACL_ACCESS, &short),
        Err(IdError::BadAcl { .. })
    ));
    let mut v1 = acl(&[]);
    v1[0] = 1;
    let err = to_host().xattr(ACL_ACCESS, &v1).unwrap_err();
    assert!(err.to_string().contains("version 1"), "{err}");
}

#[test]
fn a_v3_capability_root_id_shifts() {
    let up = to_host()
        .xattr(CAPABILITY, &cap_v3(true, 1000))
        .unwrap()
        .unwrap();
    assert_eq!(up, cap_v3(true, 101000));
    let down = to_container().xattr(CAPABILITY, &up).unwrap().unwrap();
    assert_eq!(down, cap_v3(true, 1000));
    let err = to_container()
        .xattr(CAPABILITY, &cap_v3(false, 7))
        .unwrap_err();
    assert!(
        err.to_string().contains("file capability root uid 7"),
        "{err}"
    );
}

/// What the container sees is what the bundle holds: the kernel shows a
/// v3 rooted at container root as v2 inside it; a v2 put into a remapped
/// volume becomes v3 rooted at the remapped root (as a setcap inside the
/// container makes it), so it does not grant host processes anything.
#[test]
fn v2_and_root_rooted_v3_capabilities_convert_as_the_kernel_shows_them() {
    for effective in [true, false] {
        let v3 = to_host()
            .xattr(CAPABILITY, &cap_v2(effective))
            .unwrap()
            .unwrap();
        assert_eq!(v3, cap_v3(effective, 100000));
        let v2 = to_container().xattr(CAPABILITY, &v3).unwrap().unwrap();
        assert_eq!(v2, cap_v2(effective));
    }
    // A v2 read from a remapped volume carries no id.
    assert_eq!(
        to_container().xattr(CAPABILITY, &cap_v2(true)).unwrap(),
        None
    );
    // Other xattrs are not touched.
    assert_eq!(to_host().xattr(b"user.k", b"v").unwrap(), None);
}

#[test]
fn ranges_past_2_pow_32_are_refused() {
    assert!(IdMap::new(&[(u32::MAX, 2)], &[(0, 1)], "t".into()).is_err());
    assert!(IdMap::new(&[(0, 0)], &[(0, 1)], "t".into()).is_err());
    assert!(IdMap::new(&[], &[(0, 1)], "t".into()).is_err());
    let top = IdMap::new(&[(u32::MAX, 1)], &[(0, 1)], "t".into()).unwrap();
    let up = IdShift::new(top, Direction::ToHost);
    assert_eq!(up.id(IdKind::Uid, 0).unwrap(), u32::MAX);
}

const SUBUID: &str = "\
# comment
alice:100000:65536

dockremap:165536:10
dockremap:300000:65526
1001:400000:65536
";
const SUBGID: &str = "\
alice:100000:65536
dockremap:165536:65536
1001:400000:65536
";

fn from_texts(r: RemapRoot) -> Result<IdMap, SubidError> {
    subid::map_from_texts(
        r,
        (Path::new("/etc/subuid"), SUBUID),
        (Path::new("/etc/subgid"), SUBGID),
    )
}

#[test]
fn the_remap_user_is_the_one_whose_first_range_starts_at_the_root() {
    let map = from_texts(root(165536, 165536)).unwrap();
    assert_eq!(
        map.uids,
        vec![
            IdRange {
                container: 0,
                host: 165536,
                count: 10
            },
            IdRange {
                container: 10,
                host: 300000,
                count: 65526
            },
        ]
    );
    assert_eq!(map.gids.len(), 1);
    assert!(map.origin.contains("dockremap"), "{}", map.origin);
    assert_eq!(map.root(), root(165536, 165536));
    // A user given by uid in the file.
    assert_eq!(
        from_texts(root(400000, 400000)).unwrap().uids[0].count,
        65536
    );
    // 300000 is dockremap's second range, not anyone's first.
    let err = from_texts(root(300000, 300000)).unwrap_err();
    assert!(matches!(err, SubidError::NoRemapUser { .. }), "{err}");
    assert!(err.to_string().contains("--userns-remap-size"), "{err}");
    let err = from_texts(root(165536, 1)).unwrap_err();
    assert!(matches!(err, SubidError::GidMismatch { .. }), "{err}");
}

#[test]
fn malformed_subid_lines_name_the_file_and_line() {
    let err = subid::parse("a:1:2\nbad line\n", Path::new("/etc/subuid")).unwrap_err();
    assert!(err.to_string().contains("`/etc/subuid` line 2"), "{err}");
    assert!(subid::parse("a:1:2:3\n", Path::new("x")).is_err());
    assert!(subid::parse("a:x:2\n", Path::new("x")).is_err());
    assert!(subid::parse(":1:2\n", Path::new("x")).is_err());
}

#[test]
fn a_user_without_gid_ranges_is_named() {
    let err = subid::map_from_texts(
        root(1, 1),
        (Path::new("u"), "nogid:1:5\n"),
        (Path::new("g"), "other:1:5\n"),
    )
    .unwrap_err();
    assert!(
        matches!(&err, SubidError::NoGidRange { user, .. } if user == "nogid"),
        "{err}"
    );
}
