package dict

// MaxKeysPerAccount is how many keys one account (participant, branch, number
// and type) may hold, by the type of its owner: 5 for a natural person and 20
// for a legal person (DICT API v2.6.1 and Manual Operacional do DICT; see
// DOMAIN.md, "Keys"). A create beyond it fails with [ReasonEntryLimitExceeded].
//
// An unspecified owner type gets 0, so that an owner that slipped past
// validation can hold no key at all rather than the larger of the two limits.
func MaxKeysPerAccount(t OwnerType) int {
	switch t {
	case OwnerTypeNaturalPerson:
		return 5
	case OwnerTypeLegalPerson:
		return 20
	default:
		return 0
	}
}
