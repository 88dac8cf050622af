// Command probe is the network client and server of the local cluster's test image: a static
// program, so it resolves names with Go's own resolver (Service names through the cluster's DNS)
// and needs no C library in the image.
//
//	probe serve ADDR TEXT             answer every HTTP request with TEXT and the pod's host name
//	probe get URL [CA_FILE TOKEN_FILE] print the body of URL; with a CA and a bearer token file,
//	                                   over TLS verified against that CA (the API server)
//
// Exit status: 0 on success, 1 when the request fails or answers with a status of 400 or more,
// 2 on bad usage.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch args := os.Args[2:]; os.Args[1] {
	case "serve":
		if len(args) != 2 {
			usage()
		}
		serve(args[0], args[1])
	case "get":
		if len(args) != 1 && len(args) != 3 {
			usage()
		}
		os.Exit(get(args))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: probe serve ADDR TEXT | probe get URL [CA_FILE TOKEN_FILE]")
	os.Exit(2)
}

func serve(addr, text string) {
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from %s\n", text, host)
	})
	fmt.Printf("serving on %s\n", addr)
	if err := http.ListenAndServe(addr, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func get(args []string) int {
	client := &http.Client{Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodGet, args[0], nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if len(args) == 3 {
		pem, err := os.ReadFile(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintf(os.Stderr, "%s holds no PEM certificate\n", args[1])
			return 1
		}
		token, err := os.ReadFile(args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	os.Stdout.Write(body)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if resp.StatusCode >= 400 {
		fmt.Fprintf(os.Stderr, "%s answered %s\n", args[0], resp.Status)
		return 1
	}
	return 0
}
