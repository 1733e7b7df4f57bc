//go:build linux && !(mips || mipsle || mips64 || mips64le || ppc || ppc64 || ppc64le || sparc64)

package vsockns

// The ioctl number encoding of asm-generic/ioctl.h (x86, arm, arm64,
// riscv, s390x, loong64, ...): 8 bits of number, 8 of type, 14 of size,
// 2 of direction.
const (
	iocNone    = 0
	iocWrite   = 1
	iocRead    = 2
	iocSizeMax = 1<<14 - 1
	iocDirPos  = 30
)
