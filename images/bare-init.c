/* PID 1 of the bare-boot reference (`harness bench`, bare_boot_s): print one line, power the machine off.
 * No libc and no shell, so that the boot it times is the kernel's own and nothing else. x86-64 and arm64. */
#include <linux/reboot.h>
#include <sys/syscall.h>

static long syscall4(long nr, long a, long b, long c, long d)
{
#if defined(__aarch64__)
	register long x8 __asm__("x8") = nr;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;

	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
	return x0;
#else
	register long r10 __asm__("r10") = d;
	long ret;

	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
	return ret;
#endif
}

void _start(void)
{
	static const char line[] = "HARNESS-BARE init\n";

	syscall4(SYS_write, 1, (long)line, sizeof(line) - 1, 0);
	syscall4(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF, 0);
	/* No ACPI power-off (x86): a restart ends QEMU as well (-no-reboot). arm64 powers off through PSCI. */
	syscall4(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_RESTART, 0);
	for (;;)
		;
}
