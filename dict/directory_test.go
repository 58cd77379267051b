package dict_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbpay-lab/core-dict/dict"
)

// TestDirectoryRefusal maps the directory's refusal reasons to the kinds
// the API answers with.
func TestDirectoryRefusal(t *testing.T) {
	t.Parallel()
	for _, test := range []struct {
		reason string
		retry  time.Duration
		want   dict.Kind
	}{
		{dict.ReasonRateLimited, 30 * time.Second, dict.KindRateLimited},
		{dict.ReasonEntryNotFound, 0, dict.KindNotFound},
		{"NotFound", 0, dict.KindNotFound},
		{dict.ReasonEntryInvalid, 0, dict.KindInvalid},
		{dict.ReasonEntryKeyOwnedByDifferentPerson, 0, dict.KindConflict},
		{dict.ReasonEntryKeyInCustodyOfDifferentParticipant, 0, dict.KindConflict},
		{dict.ReasonEntryLockedByClaim, 0, dict.KindPrecondition},
		{dict.ReasonEntryLimitExceeded, 0, dict.KindPrecondition},
		{dict.ReasonForbidden, 0, dict.KindPermissionDenied},
		{"SomethingNew", 0, dict.KindPrecondition},
	} {
		err := dict.DirectoryRefusal(test.reason, "", test.retry)
		got := struct {
			Kind   dict.Kind
			Reason string
			Retry  time.Duration
		}{err.Kind, err.Reason, err.RetryAfter}
		want := struct {
			Kind   dict.Kind
			Reason string
			Retry  time.Duration
		}{test.want, test.reason, test.retry}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("DirectoryRefusal(%s) mismatch (-want +got):\n%s", test.reason, diff)
		}
		if err.Msg == "" {
			t.Errorf("DirectoryRefusal(%s) has no message", test.reason)
		}
	}
}
