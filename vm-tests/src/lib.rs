//! VM boot tests of the dracut initramfs. Not built yet (issue 4); this crate holds no tests
//! so that nothing here pretends to pass.
#![forbid(unsafe_code)]
