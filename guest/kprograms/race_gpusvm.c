/*
 * race_gpusvm CASE MODE [--pages=N] [--rounds=R] [--ops=K] [--seconds=S]: the race workloads
 * (../programs/race.h) against the GPU SVM library (drivers/gpu/drm/drm_gpusvm.c) through the harness's fake
 * GPU, /dev/gpusvm_mirror (../gpusvm/gpusvm_device.c), on N pages (64: four ranges of 64 KiB).
 *
 * MODE is the device's (enum gsm_mode): safe (the library's DOC), novalid (binds without
 * drm_gpusvm_pages_valid()), unsafe (ignores invalidations). The device access is GSM_IOCTL_READ of the range:
 * the device faults what it does not map (drm_gpusvm_get_pages(), which loops on mmu_interval_read_retry()
 * itself), prepares its page table, and commits it only if the pages are still valid, else faults again.
 * cmd.faults counts get_pages calls, cmd.retries the faults done again. The host counts
 * mmu_interval_read_begin() calls with a kprobe: beyond one per get_pages, each is a retry inside it.
 * The verify, with both threads quiet: the same read, and the pages whose bytes differ from what the CPU reads
 * now ("mismatched": the device mapped an old frame).
 * Prints "faults", "retries" and "mismatched" with race.h's fields.
 */
#include "../programs/race.h"
#include "../gpusvm/gpusvm_mirror.h"

#include <sys/ioctl.h>

static int dev = -1;
static char *buf;
static long long faults, retries, mismatched;

static int device_read(void)
{
	struct gsm_cmd cmd;

	memset(&cmd, 0, sizeof(cmd));
	cmd.addr = (unsigned long)p;
	cmd.ptr = (unsigned long)buf;
	cmd.npages = mpages;
	while (ioctl(dev, GSM_IOCTL_READ, &cmd)) {
		faults += cmd.faults;
		retries += cmd.retries;
		if (errno != EINTR)
			return errno;
	}
	faults += cmd.faults;
	retries += cmd.retries;
	return 0;
}

static void device_setup(const char **pos)
{
	static const char *const modes[] = { [GSM_SAFE] = "safe", [GSM_NOVALID] = "novalid", [GSM_UNSAFE] = "unsafe" };
	__u32 mode = 0;

	while (mode < 3 && strcmp(pos[1], modes[mode]))
		mode++;
	if (mode == 3)
		fail("MODE is safe, novalid or unsafe");
	if (mpages > GSM_MAX_PAGES)
		fail("race_gpusvm reads at most 4096 pages an access");
	dev = open("/dev/gpusvm_mirror", O_RDWR | O_CLOEXEC);	/* a GPU VM of this mm from here */
	if (dev < 0)
		die("open /dev/gpusvm_mirror");
	if (ioctl(dev, GSM_IOCTL_MODE, &mode))
		die("GSM_IOCTL_MODE");
	buf = malloc(mpages * page);
	if (!buf)
		fail("malloc");
}

static int device_access(void)
{
	return device_read();
}

static int device_verify(int quiet)
{
	int err;

	if (!quiet)
		return 0;	/* the other CPU is writing the pages: no moment to compare at */
	err = device_read();
	if (!err)
		mismatched += pages_differing(buf);
	return err;
}

static void device_json(void)
{
	json_int("faults", faults);
	json_int("retries", retries);
	json_int("mismatched", mismatched);
}

int main(int argc, char **argv)
{
	const char *pos[2] = { 0 };

	return race_main(argc, argv, pos, 2, "usage: race_gpusvm CASE safe|novalid|unsafe [--pages=N] [--rounds=R] "
			 "[--ops=K] [--seconds=S]");
}
