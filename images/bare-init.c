/* PID 1 of the bare-boot reference (`harness bench`, bare_boot_s): print one line, power the machine off.
 * No libc and no shell, so that the boot it times is the kernel's own and nothing else. x86-64 only. */
#include <linux/reboot.h>
#include <sys/syscall.h>

static long syscall4(long nr, long a, long b, long c, long d)
{
	register long r10 __asm__("r10") = d;
	long ret;

	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
	return ret;
}

void _start(void)
{
	static const char line[] = "HARNESS-BARE init\n";

	syscall4(SYS_write, 1, (long)line, sizeof(line) - 1, 0);
	syscall4(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF, 0);
	/* No ACPI power-off: a restart ends QEMU as well (-no-reboot). */
	syscall4(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_RESTART, 0);
	for (;;)
		;
}
