package store_test

import (
	"testing"

	"github.com/meshfs/meshfs/store"
	"github.com/meshfs/meshfs/store/storetest"
)

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, quota uint64) store.BlockStore {
		m := store.NewMemory(quota)
		t.Cleanup(func() { m.Close() })
		return m
	})
}

func TestMemoryRetentionConformance(t *testing.T) {
	storetest.RunRetention(t, func(t *testing.T, quota uint64) storetest.RetentionStore {
		m := store.NewMemory(quota)
		t.Cleanup(func() { m.Close() })
		return m
	})
}
