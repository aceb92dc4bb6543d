package service_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connectrelay/connectrelay/config"
	"github.com/connectrelay/connectrelay/internal/testenv"
	"github.com/connectrelay/connectrelay/service"
)

func TestReceiver_DescriptorFileConflictIsAStartupErrorNamingTheKey(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "descriptor.json")
	if err := os.WriteFile(file, []byte(`{"modules":{},"lifecycle":{"installed":"/my-own-installed"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Config{
		ListenAddr: "127.0.0.1:0", RedisURL: testenv.RedisURL(t), DatabaseURL: testenv.PostgresURL(t),
		AppKey: appKey, AppName: "x", BaseURL: "https://app.example.com", ProductHosts: []string{"127.0.0.1"},
		Scopes: []string{"READ"}, SecretKey: make([]byte, 32), JWTLeeway: 30 * time.Second,
		ShutdownTimeout: time.Second, LogLevel: "error", DescriptorFile: file,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := service.NewReceiver(ctx, cfg, service.ReceiverOptions{})
	if err == nil || !strings.Contains(err.Error(), `"lifecycle.installed"`) || !strings.Contains(err.Error(), "CONNECT_DESCRIPTOR_FILE") {
		t.Fatalf("NewReceiver = %v, want a start-up error naming lifecycle.installed", err)
	}
}
