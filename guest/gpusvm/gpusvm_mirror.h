/* SPDX-License-Identifier: GPL-2.0 */
/*
 * /dev/gpusvm_mirror's interface (gpusvm_device.c), shared by the module and the guest programs that drive it
 * (../kprograms/gpusvm_steps.c, race_gpusvm.c). Each open is one GPU VM mirroring the opener's mm.
 */
#ifndef GPUSVM_MIRROR_H
#define GPUSVM_MIRROR_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define GSM_MAX_PAGES 4096	/* one access at most: the device copies through a bounce buffer of this size */
#define GSM_MAX_RANGES 64

/* How the device treats the GPU SVM contract (GSM_IOCTL_MODE), the last two being the negative controls. */
enum gsm_mode {
	GSM_SAFE = 0,		/* as drm_gpusvm.c's DOC: unmap on every invalidation, read only valid pages */
	GSM_NOVALID = 1,	/* reads through its DMA addresses without drm_gpusvm_pages_valid() */
	GSM_UNSAFE = 2,		/* its invalidate callback does nothing */
};

/* GSM_IOCTL_READ: the device reads [addr, addr + npages pages) into ptr, faulting in what it lacks. */
struct gsm_cmd {
	__u64 addr;
	__u64 npages;
	__u64 ptr;
	__u64 faults;	/* out: drm_gpusvm_get_pages() calls (ranges the device had to fault) */
	__u64 retries;	/* out: faults done again because an invalidation came after get_pages */
};

/* GSM_IOCTL_RANGES: the GPU SVM ranges of this VM now, in address order. */
struct gsm_range_info {
	__u64 start, end;
	__u32 valid;		/* drm_gpusvm_pages_valid(): the device may read it without a fault */
	__u32 unmapped;		/* range->flags.unmapped: an UNMAP took it, garbage until the next fault */
	__u32 partial_unmap;	/* range->flags.partial_unmap: the UNMAP covered only part of it */
	__u32 pad;
};

struct gsm_ranges {
	__u64 count;	/* out */
	struct gsm_range_info range[GSM_MAX_RANGES];
};

#define GSM_IOCTL_READ _IOWR('G', 0x00, struct gsm_cmd)
#define GSM_IOCTL_RANGES _IOR('G', 0x01, struct gsm_ranges)
#define GSM_IOCTL_MODE _IOW('G', 0x02, __u32)

#endif
