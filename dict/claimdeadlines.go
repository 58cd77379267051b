package dict

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/lbpay-lab/core-dict/sqlc"
)

// The claim deadlines are enforced by the service on its own clock
// ([ServiceConfig.Now]), never by a person remembering them (DOMAIN.md,
// "Claims"):
//   - a PORTABILITY claim the donor left unanswered past the resolution
//     period: the donor cancels it with DEFAULT_OPERATION;
//   - an OWNERSHIP claim the donor left unanswered past the resolution
//     period: the donor confirms it with DEFAULT_OPERATION;
//   - an OWNERSHIP claim the claimer has not completed by day 30: the
//     claimer cancels it with DEFAULT_OPERATION.
// Each is an ordinary claim action (pending, DirectoryRequest in the
// outbox), sent once: a claim with an action pending is not due.

// DefaultClaimSchedulerInterval is how often [Service.RunClaimDeadlines]
// looks for due claims by default (CLAIM_SCHEDULER_INTERVAL).
const DefaultClaimSchedulerInterval = 30 * time.Second

// claimDeadlineBatch bounds one run's transaction.
const claimDeadlineBatch = 100

// schedulerSubject is the actor of the scheduler's actions in the audit log.
const schedulerSubject = "claim-scheduler"

// EnforceClaimDeadlines sends the actions of every claim whose deadline has
// passed on the service's clock, and reports how many it sent. Due claims
// are locked with FOR UPDATE SKIP LOCKED, so several instances may run it
// at once: each claim is taken by one, and an action once pending is not
// sent again.
func (s *Service) EnforceClaimDeadlines(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := s.enforceClaimDeadlinesBatch(ctx)
		total += n
		if err != nil || n < claimDeadlineBatch {
			return total, err
		}
	}
}

func (s *Service) enforceClaimDeadlinesBatch(ctx context.Context) (int, error) {
	now := s.now().UTC()
	sent := 0
	// The scheduler acts for every participant this instance serves.
	err := s.inTx(ctx, "enforce claim deadlines", s.workerScope(), func(q *sqlc.Queries) error {
		sent = 0
		rows, err := q.DueClaims(ctx, sqlc.DueClaimsParams{Now: now, ValidationStart: now.Add(-ClaimOwnershipValidationPeriod), Batch: claimDeadlineBatch})
		if err != nil {
			return err
		}
		for _, row := range rows {
			cl := claimFromRow(row)
			side, action, ok := dueAction(cl, now)
			if !ok {
				continue
			}
			participant := cl.DonorParticipant
			if side == ClaimSideClaimer {
				participant = cl.ClaimerParticipant
			}
			c := Caller{Participant: participant, Subject: schedulerSubject}
			if _, err := s.sendClaimAction(ctx, q, c, cl, side, action, ReasonDefaultOperation, uuid.New(), now); err != nil {
				if KindOf(err) == KindInternal || KindOf(err) == KindUnavailable {
					return err
				}
				s.logger.WarnContext(ctx, "claim deadline passed but its action is not allowed", "claim", cl.ID.String(), "err", err.Error())
				continue
			}
			sent++
		}
		if len(rows) == claimDeadlineBatch && sent == 0 {
			// A full batch of claims none of which could be acted on: stop
			// here rather than read the same batch again.
			sent = -1
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if sent < 0 {
		return 0, nil
	}
	if sent > 0 {
		s.logger.InfoContext(ctx, "claim deadlines enforced", "actions", sent)
	}
	return sent, nil
}

// dueAction is the action a claim's passed deadline calls for, and the
// local side that takes it.
func dueAction(cl Claim, now time.Time) (ClaimSide, ClaimAction, bool) {
	if cl.IsDonor && (cl.Status == ClaimStatusOpen || cl.Status == ClaimStatusWaitingResolution) && !now.Before(cl.ResolutionPeriodEnd) {
		if cl.Type == ClaimTypePortability {
			return ClaimSideDonor, ClaimActionCancel, true
		}
		return ClaimSideDonor, ClaimActionConfirm, true
	}
	if cl.IsClaimer && cl.Type == ClaimTypeOwnership && cl.Status.Open() && !now.Before(cl.CreatedAt.Add(ClaimOwnershipValidationPeriod)) {
		return ClaimSideClaimer, ClaimActionCancel, true
	}
	return ClaimSideNone, ClaimActionUnspecified, false
}

// RunClaimDeadlines runs [Service.EnforceClaimDeadlines] every interval
// until ctx ends; a failed run is logged and retried at the next tick.
func (s *Service) RunClaimDeadlines(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultClaimSchedulerInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := s.EnforceClaimDeadlines(ctx); err != nil && ctx.Err() == nil {
			s.logger.ErrorContext(ctx, "claim deadlines not enforced; retried at the next tick", "err", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
