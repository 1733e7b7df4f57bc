//go:build linux && (mips || mipsle || mips64 || mips64le || ppc || ppc64 || ppc64le || sparc64)

package vsockns

// The ioctl number encoding of MIPS, PowerPC and SPARC: 13 bits of size and
// 3 of direction, with "none" a bit of its own.
const (
	iocNone    = 1
	iocWrite   = 4
	iocRead    = 2
	iocSizeMax = 1<<13 - 1
	iocDirPos  = 29
)
