/* Virtio device helpers shared by device models: interrupting the guest for a queue. */
#include "virtio.h"

#include <errno.h>
#include <unistd.h>

void virtio_queue_interrupt(const struct virtio_activation *act, unsigned int q)
{
	uint64_t one = 1;
	ssize_t r;

	if (q >= act->nqueues || q >= VIRTIO_MAX_QUEUES || !act->queues[q] || act->call_fd[q] < 0)
		return;
	if (!virtq_need_interrupt(act->queues[q]))
		return;
	/* EAGAIN means the eventfd counter is saturated: the guest is already signalled. */
	do {
		r = write(act->call_fd[q], &one, sizeof(one));
	} while (r < 0 && errno == EINTR);
}
