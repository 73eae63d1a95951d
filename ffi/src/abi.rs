/// Version of the C ABI described by `hydrant.h`. It changes whenever a function signature, a
/// struct layout or the meaning of a value changes incompatibly, and is the major number of the
/// shared library's soname (`libhydrant.so.1`). Compare it with `hydrant_abi_version()` at run
/// time to check that the header and the library agree.
pub const HYDRANT_ABI_VERSION: u32 = 1;
