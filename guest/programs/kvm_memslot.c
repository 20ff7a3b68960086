/*
 * kvm_memslot: a KVM guest whose memory is this process's own anonymous mapping, then mm operations
 * on that mapping while the VM lives, so that KVM's mmu_notifier must zap what the vCPU had mapped.
 *
 * 16 pages back guest-physical [0, 64 KiB) (memslot 0). A vCPU (x86: in real mode; arm64: at EL1 with its MMU
 * off) runs code at 0x1000 that writes 0x42 to the first byte of pages 2..15 and stops (x86: hlt; arm64, which
 * has no HLT exit: a store outside every memslot, an MMIO exit). Then, in order:
 *   madvise(DONTNEED) pages 4..5, run the vCPU again (it refaults them), mprotect(PROT_READ)
 *   pages 8..11, munmap all 16 pages.
 * After each step the VM's own debugfs statistics (/sys/kernel/debug/kvm/<pid>-<vmfd>/) are read.
 *
 * Prints one JSON object: {"workload":"kvm_memslot","pid":..,"page_size":..,"start":..,"end":..,
 * "probed":0|1,"written":N,"steps":[{"op":..,"start":..,"end":..,"stats":{name:value,...}},...]}
 * where written counts the pages 2..15 holding 0x42 after the first run, and start/end of a step
 * is the range it operated on. Exits 2 with a message on stderr when there is no usable KVM.
 */
#define _GNU_SOURCE
#include "probe.h"

#include <dirent.h>
#include <stddef.h>
#include <linux/kvm.h>
#include <signal.h>
#include <sys/ioctl.h>

#define NPAGES 16
#define CODE_GPA 0x1000

#if defined(__aarch64__)
/* EL1, MMU off: x1 = 0x2000; l: strb 0x42,[x1]; x1 += 0x1000; until 0x10000; then str to GPA 0x100000,
 * outside every memslot, which exits to user space as KVM_EXIT_MMIO (arm64 KVM has no HLT exit) */
static const unsigned char code[] = { 0x01, 0x00, 0x84, 0xd2, 0x42, 0x08, 0x80, 0x52, 0x23, 0x00, 0xa0, 0xd2,
				      0x22, 0x00, 0x00, 0x39, 0x21, 0x04, 0x40, 0x91, 0x3f, 0x00, 0x03, 0xeb,
				      0xa1, 0xff, 0xff, 0x54, 0x04, 0x02, 0xa0, 0xd2, 0x84, 0x00, 0x00, 0xf9,
				      0x00, 0x00, 0x00, 0x14 };
#else
/* mov bx,0x2000; l: mov byte [bx],0x42; add bx,0x1000; jnz l; hlt */
static const unsigned char code[] = { 0xbb, 0x00, 0x20, 0xc6, 0x07, 0x42, 0x81, 0xc3,
				      0x00, 0x10, 0x75, 0xf7, 0xf4 };

#endif

static int vcpu_fd;
static struct kvm_run *run;
static char stats_dir[128];
static int first_step = 1;

static void no_kvm(const char *what)
{
	fprintf(stderr, "no usable KVM: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void on_alarm(int sig)
{
	(void)sig; /* only there to interrupt KVM_RUN with EINTR */
}

#if defined(__aarch64__)
/* The vCPU starts (again) at CODE_GPA; its end is the store to GPA 0x100000, outside every memslot */
static void start_at_code(void)
{
	__u64 pc = CODE_GPA;
	struct kvm_one_reg reg = {
		.id = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | KVM_REG_ARM_CORE_REG(regs.pc),
		.addr = (unsigned long)&pc,
	};

	/* A previous MMIO exit is completed (PC stepped past the store) by the next KVM_RUN: do that one with
	 * immediate_exit, so that it returns EINTR before running, and only then move the PC */
	run->immediate_exit = 1;
	if (ioctl(vcpu_fd, KVM_RUN, 0) == 0 || errno != EINTR)
		die("KVM_RUN immediate_exit");
	run->immediate_exit = 0;
	if (ioctl(vcpu_fd, KVM_SET_ONE_REG, &reg))
		die("KVM_SET_ONE_REG pc");
}

static int code_ended(void)
{
	return run->exit_reason == KVM_EXIT_MMIO && run->mmio.is_write && run->mmio.phys_addr == 0x100000;
}
#else
/* The vCPU starts (again) at CODE_GPA in real mode; its end is the hlt */
static void start_at_code(void)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs))
		die("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs))
		die("KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = CODE_GPA;
	regs.rflags = 0x2;
	if (ioctl(vcpu_fd, KVM_SET_REGS, &regs))
		die("KVM_SET_REGS");
}

static int code_ended(void)
{
	return run->exit_reason == KVM_EXIT_HLT;
}
#endif

static void run_vcpu(void)
{
	start_at_code();
	alarm(30);
	for (;;) {
		if (ioctl(vcpu_fd, KVM_RUN, 0)) {
			if (errno == EINTR) {
				fprintf(stderr, "KVM_RUN: the vCPU did not exit within 30 s\n");
				exit(3);
			}
			die("KVM_RUN");
		}
		if (code_ended()) {
			alarm(0);
			return;
		}
		if (run->exit_reason != KVM_EXIT_INTR) {
			fprintf(stderr, "KVM_RUN: unexpected exit reason %u\n", run->exit_reason);
			exit(1);
		}
	}
}

/* This VM's top-level debugfs statistics as a JSON object (vcpu directories and histograms left out). */
static void print_stats(void)
{
	DIR *d = opendir(stats_dir);
	struct dirent *e;
	int first = 1;

	if (!d)
		die(stats_dir);
	printf("\"stats\":{");
	while ((e = readdir(d))) {
		char path[512], buf[64];
		unsigned long long v;
		char extra;
		FILE *f;

		if (e->d_type != DT_REG)
			continue;
		snprintf(path, sizeof(path), "%s/%s", stats_dir, e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f) && sscanf(buf, "%llu %c", &v, &extra) == 1) {
			printf("%s\"%s\":%llu", first ? "" : ",", e->d_name, v);
			first = 0;
		}
		fclose(f);
	}
	closedir(d);
	printf("}");
}

static void step(const char *op, char *start, size_t len)
{
	printf("%s{\"op\":\"%s\",\"start\":%lu,\"end\":%lu,", first_step ? "" : ",", op,
	       (unsigned long)start, (unsigned long)start + len);
	first_step = 0;
	print_stats();
	printf("}");
}

int main(int argc, char **argv)
{
	int kvm, vm, written = 0;

	struct sigaction sa = { .sa_handler = on_alarm }; /* no SA_RESTART: KVM_RUN returns EINTR */

	setup(argc, argv);
	sigaction(SIGALRM, &sa, NULL);
	size_t len = NPAGES * page;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		no_kvm("open /dev/kvm");
	if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
		no_kvm("KVM_GET_API_VERSION");
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		no_kvm("KVM_CREATE_VM");
	snprintf(stats_dir, sizeof(stats_dir), "/sys/kernel/debug/kvm/%d-%d", getpid(), vm);

	char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	memcpy(mem + CODE_GPA, code, sizeof(code));
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = len, .userspace_addr = (unsigned long)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region))
		die("KVM_SET_USER_MEMORY_REGION");
	vcpu_fd = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu_fd < 0)
		no_kvm("KVM_CREATE_VCPU");
#if defined(__aarch64__)
	struct kvm_vcpu_init init;

	if (ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init))
		no_kvm("KVM_ARM_PREFERRED_TARGET");
	if (ioctl(vcpu_fd, KVM_ARM_VCPU_INIT, &init))
		no_kvm("KVM_ARM_VCPU_INIT");
#endif
	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");

	probe_watch_self(argc, argv);
	printf("{\"workload\":\"kvm_memslot\",\"pid\":%d,\"page_size\":%ld,\"start\":%lu,\"end\":%lu,"
	       "\"probed\":%d,\"steps\":[", getpid(), page, (unsigned long)mem, (unsigned long)mem + len, probed);
	run_vcpu();
	for (int i = 2; i < NPAGES; i++)
		written += mem[i * page] == 0x42;
	step("run", mem, len);
	if (madvise(mem + 4 * page, 2 * page, MADV_DONTNEED))
		die("madvise");
	step("madvise_dontneed", mem + 4 * page, 2 * page);
	run_vcpu();
	step("rerun", mem, len);
	if (mprotect(mem + 8 * page, 4 * page, PROT_READ))
		die("mprotect");
	step("mprotect_read", mem + 8 * page, 4 * page);
	if (munmap(mem, len))
		die("munmap");
	step("munmap", mem, len);
	printf("],\"written\":%d}\n", written);
	return 0;
}
