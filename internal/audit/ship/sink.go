// Package ship moves audit records from the spool to the audit store: it reads fsynced batches,
// decodes them, writes them with the batch's deduplication token (retrying the same batch until
// the store has it) and acknowledges them so the spool can delete its segments.
package ship

import (
	"context"

	"github.com/kaccess/kaccess/internal/audit/event"
)

// Sink is an audit store as the shipper sees it.
type Sink interface {
	// Write stores events, each with GatewayInstance and Seq set. A retry of a batch carries
	// the same token and the same events; the store must keep such a batch once. An error
	// means the batch may or may not be stored: the shipper retries it.
	Write(ctx context.Context, token string, events []*event.Event) error
}

// SeqLister is implemented by stores that can tell which records of a gateway they hold. The
// shipper asks before sending a batch that may have gone in already (the first batch after a
// start, which a crash may have left unacknowledged, and every retry) and sends only the
// missing records. This makes delivery exactly-once on any server, including those without
// insert deduplication tokens, and for batches an insert took only partly (one part per day).
type SeqLister interface {
	// StoredSeqs returns the sequence numbers in [first, last] stored for the gateway
	// instance.
	StoredSeqs(ctx context.Context, instance string, first, last uint64) ([]uint64, error)
}
