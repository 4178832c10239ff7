/*
 * harbor_token.c
 *		Harbor's registry pull token, minted here as Harbor core mints it for
 *		a preheat: a JWT signed RS256 with Harbor core's private key.
 *
 * Harbor's registry finds the signing key by the "kid" header, which is
 * Docker libtrust's key id: SHA-256 of the DER SubjectPublicKeyInfo, its
 * first 240 bits in base32 without padding, in twelve groups of four joined
 * by ':'.  The claims are Harbor's own: issuer "harbor-token-issuer",
 * subject "distributor", audience "harbor-registry" as a plain string,
 * nbf and iat the same second, exp lifetime seconds later, a jti of 16
 * letters and digits, and pull access to the one repository.
 *
 * The parsed key is kept per backend and read again when the setting names
 * another file or the file changes (inode, size, mtime or ctime), so a
 * rotated key, or one whose permissions were taken away, takes effect at
 * the next job.  Nothing here logs: a token is a credential until it expires.
 */
#include "postgres.h"

#include <sys/stat.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/json.h"

#include "harbor_token.h"

#define MAX_KEY_FILE (64 * 1024)
#define KID_LEN (12 * 4 + 11)	/* 48 base32 characters and 11 colons */
#define JTI_LEN 16

char	   *harbor_token_private_key_file = NULL;

/* The key last read, and what its file looked like then. */
static EVP_PKEY *cached_key = NULL;
static char *cached_path = NULL;	/* malloc'd */
static struct stat cached_stat;
static char cached_kid[KID_LEN + 1];

static void
forget_key(void)
{
	EVP_PKEY_free(cached_key);
	cached_key = NULL;
	free(cached_path);
	cached_path = NULL;
}

static bool
same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
		a->st_size == b->st_size &&
		a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
		a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
		a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
		a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* An encrypted key is refused, never prompted for on the server's terminal. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

/* OpenSSL's reason for the last failure, palloc'd; clears OpenSSL's queue. */
static char *
openssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	char	   *s = pstrdup(r ? r : "unknown OpenSSL error");

	ERR_clear_error();
	return s;
}

/* RFC 4648 base32 of 30 bytes (no padding needed), grouped as libtrust does. */
static void
libtrust_key_id(const unsigned char *digest, char *out)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
	char		b32[48];
	int			n = 0;

	for (int i = 0; i < 30; i += 5)
	{
		uint64		v = 0;

		for (int k = 0; k < 5; k++)
			v = (v << 8) | digest[i + k];
		for (int k = 7; k >= 0; k--)
			b32[n++] = alphabet[(v >> (k * 5)) & 31];
	}
	n = 0;
	for (int g = 0; g < 12; g++)
	{
		if (g > 0)
			out[n++] = ':';
		memcpy(out + n, b32 + g * 4, 4);
		n += 4;
	}
	out[n] = '\0';
}

/* Read and parse the key file into the cache. */
static bool
load_key(const char *path, const struct stat *st, char **error)
{
	FILE	   *f;
	char	   *buf;
	size_t		n;
	int			save_errno;
	BIO		   *bio;
	EVP_PKEY   *pkey;
	unsigned char *der = NULL;
	int			derlen;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digestlen = 0;
	char	   *newpath;

	*error = NULL;
	f = AllocateFile(path, "rb");
	if (f == NULL)
	{
		*error = psprintf("could not open p2p_preheat.token_private_key_file \"%s\": %s",
						  path, strerror(errno));
		return false;
	}
	buf = palloc(MAX_KEY_FILE + 1);
	n = fread(buf, 1, MAX_KEY_FILE + 1, f);
	save_errno = errno;
	if (ferror(f))
	{
		FreeFile(f);
		explicit_bzero(buf, MAX_KEY_FILE + 1);
		pfree(buf);
		*error = psprintf("could not read p2p_preheat.token_private_key_file \"%s\": %s",
						  path, strerror(save_errno));
		return false;
	}
	FreeFile(f);
	if (n > MAX_KEY_FILE)
	{
		explicit_bzero(buf, MAX_KEY_FILE + 1);
		pfree(buf);
		*error = psprintf("p2p_preheat.token_private_key_file \"%s\" is larger than %d kB; it should hold one PEM private key",
						  path, MAX_KEY_FILE / 1024);
		return false;
	}

	buf[n] = '\0';
	if (strstr(buf, "-----BEGIN ") == NULL)
		*error = psprintf("p2p_preheat.token_private_key_file \"%s\" is not a PEM file; it should hold Harbor core's private key",
						  path);
	else if (strstr(buf, "-----BEGIN ENCRYPTED PRIVATE KEY-----") ||
			 strstr(buf, "Proc-Type: 4,ENCRYPTED"))
		*error = psprintf("p2p_preheat.token_private_key_file \"%s\" is encrypted; Harbor core's private key is read unencrypted",
						  path);
	if (*error)
	{
		explicit_bzero(buf, n);
		pfree(buf);
		return false;
	}

	ERR_clear_error();
	bio = BIO_new_mem_buf(buf, (int) n);
	pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
	BIO_free(bio);
	explicit_bzero(buf, n);
	pfree(buf);
	if (pkey == NULL)
	{
		*error = psprintf("p2p_preheat.token_private_key_file \"%s\" holds no unencrypted PEM private key: %s",
						  path, openssl_reason());
		return false;
	}
	if (EVP_PKEY_base_id(pkey) != EVP_PKEY_RSA)
	{
		EVP_PKEY_free(pkey);
		*error = psprintf("p2p_preheat.token_private_key_file \"%s\" does not hold an RSA key; Harbor's tokens are signed RS256",
						  path);
		return false;
	}

	derlen = i2d_PUBKEY(pkey, &der);
	if (derlen <= 0 ||
		EVP_Digest(der, derlen, digest, &digestlen, EVP_sha256(), NULL) != 1 ||
		(newpath = strdup(path)) == NULL)
	{
		OPENSSL_free(der);
		EVP_PKEY_free(pkey);
		*error = psprintf("could not compute the key id of p2p_preheat.token_private_key_file \"%s\": %s",
						  path, openssl_reason());
		return false;
	}
	OPENSSL_free(der);

	forget_key();
	cached_key = pkey;
	cached_path = newpath;
	cached_stat = *st;
	libtrust_key_id(digest, cached_kid);
	return true;
}

/* The key named by the setting, read again if the file changed. */
static EVP_PKEY *
current_key(char **error)
{
	const char *path = harbor_token_private_key_file;
	struct stat st;

	if (stat(path, &st) != 0)
	{
		forget_key();
		*error = psprintf("could not open p2p_preheat.token_private_key_file \"%s\": %s",
						  path, strerror(errno));
		return NULL;
	}
	if (cached_key && strcmp(cached_path, path) == 0 && same_file(&cached_stat, &st))
		return cached_key;
	forget_key();				/* a file that fails to load must not sign */
	if (!load_key(path, &st, error))
		return NULL;
	return cached_key;
}

/* Harbor's jti alphabet; rejection sampling keeps every character equally likely. */
static bool
random_jti(char *out)
{
	static const char alphabet[] =
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	int			n = 0;

	while (n < JTI_LEN)
	{
		unsigned char r[32];

		if (!pg_strong_random(r, sizeof(r)))
			return false;
		for (int i = 0; i < (int) sizeof(r) && n < JTI_LEN; i++)
			if (r[i] < 248)		/* 248 = 4 * 62 */
				out[n++] = alphabet[r[i] % 62];
	}
	out[n] = '\0';
	return true;
}

/* base64url without padding; dst holds 4 * ceil(len / 3) + 1 bytes. */
static size_t
base64url(const unsigned char *src, size_t len, char *dst)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t		n = 0;

	for (size_t i = 0; i < len; i += 3)
	{
		uint32		v = (uint32) src[i] << 16;
		size_t		left = len - i;

		if (left > 1)
			v |= (uint32) src[i + 1] << 8;
		if (left > 2)
			v |= src[i + 2];
		dst[n++] = alphabet[(v >> 18) & 63];
		dst[n++] = alphabet[(v >> 12) & 63];
		if (left > 1)
			dst[n++] = alphabet[(v >> 6) & 63];
		if (left > 2)
			dst[n++] = alphabet[v & 63];
	}
	dst[n] = '\0';
	return n;
}

static void
append_base64url(StringInfo buf, const char *src, size_t len)
{
	enlargeStringInfo(buf, (int) (4 * ((len + 2) / 3) + 1));
	buf->len += base64url((const unsigned char *) src, len, buf->data + buf->len);
}

char *
harbor_token_mint(const char *repository, int lifetime_s, char **error)
{
	EVP_PKEY   *pkey;
	char		jti[JTI_LEN + 1];
	int64		now = (int64) time(NULL);
	StringInfoData part;
	StringInfoData input;
	EVP_MD_CTX *md;
	unsigned char *sig = NULL;
	size_t		siglen = 0;
	char	   *token;
	size_t		sig64len;

	*error = NULL;
	if (harbor_token_private_key_file == NULL || harbor_token_private_key_file[0] == '\0')
	{
		*error = pstrdup("p2p_preheat.token_private_key_file is not set");
		return NULL;
	}
	if (lifetime_s <= 0)
	{
		*error = psprintf("a pull token's lifetime must be positive, not %d seconds", lifetime_s);
		return NULL;
	}
	/* an RSA-4096 signature costs milliseconds, and a batch signs one per job */
	CHECK_FOR_INTERRUPTS();
	pkey = current_key(error);
	if (pkey == NULL)
		return NULL;
	if (!random_jti(jti))
	{
		*error = pstrdup("could not generate a random token id");
		return NULL;
	}

	/* header.claims, each base64url-encoded JSON */
	initStringInfo(&input);
	initStringInfo(&part);
	appendStringInfo(&part, "{\"alg\":\"RS256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", cached_kid);
	append_base64url(&input, part.data, part.len);
	appendStringInfoChar(&input, '.');
	resetStringInfo(&part);
	appendStringInfo(&part,
					 "{\"iss\":\"harbor-token-issuer\",\"sub\":\"distributor\","
					 "\"aud\":\"harbor-registry\",\"exp\":" INT64_FORMAT ","
					 "\"nbf\":" INT64_FORMAT ",\"iat\":" INT64_FORMAT ",\"jti\":\"%s\","
					 "\"access\":[{\"type\":\"repository\",\"name\":",
					 now + lifetime_s, now, now, jti);
	escape_json(&part, repository);
	appendStringInfoString(&part, ",\"actions\":[\"pull\"]}]}");
	append_base64url(&input, part.data, part.len);
	pfree(part.data);

	/* RS256: RSASSA-PKCS1-v1_5 with SHA-256, OpenSSL's default RSA padding */
	ERR_clear_error();
	md = EVP_MD_CTX_new();
	if (md == NULL ||
		EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) != 1 ||
		EVP_DigestSign(md, NULL, &siglen, (unsigned char *) input.data, input.len) != 1 ||
		(sig = OPENSSL_malloc(siglen)) == NULL ||
		EVP_DigestSign(md, sig, &siglen, (unsigned char *) input.data, input.len) != 1)
	{
		EVP_MD_CTX_free(md);
		OPENSSL_free(sig);
		pfree(input.data);
		*error = psprintf("could not sign a pull token with p2p_preheat.token_private_key_file \"%s\": %s",
						  harbor_token_private_key_file, openssl_reason());
		return NULL;
	}
	EVP_MD_CTX_free(md);

	sig64len = 4 * ((siglen + 2) / 3);
	token = malloc(input.len + 1 + sig64len + 1);
	if (token != NULL)
	{
		memcpy(token, input.data, input.len);
		token[input.len] = '.';
		base64url(sig, siglen, token + input.len + 1);
	}
	else
		*error = pstrdup("out of memory for a pull token");
	OPENSSL_clear_free(sig, siglen);
	pfree(input.data);
	return token;
}

void
harbor_token_free(char *token)
{
	if (token)
	{
		explicit_bzero(token, strlen(token));
		free(token);
	}
}

/*
 * A URL's scheme, host and port (the default one for http and https), and
 * where its path starts.  Enough for URLs we compare, not a general parser.
 */
typedef struct UrlOrigin
{
	const char *scheme;
	int			scheme_len;
	const char *host;
	int			host_len;
	long		port;
	const char *path;
} UrlOrigin;

static bool
parse_origin(const char *url, UrlOrigin *o)
{
	const char *sep = url ? strstr(url, "://") : NULL;
	const char *auth;
	const char *end;
	const char *host_end;

	if (sep == NULL || sep == url)
		return false;
	o->scheme = url;
	o->scheme_len = sep - url;
	auth = sep + 3;
	end = auth + strcspn(auth, "/?#");
	for (const char *c = auth; c < end; c++)
		if (*c == '@')
			auth = c + 1;		/* user info is not part of the origin */
	if (*auth == '[')
	{
		host_end = memchr(auth, ']', end - auth);
		if (host_end == NULL)
			return false;
		host_end++;
	}
	else
		for (host_end = auth; host_end < end && *host_end != ':'; host_end++)
			;
	o->host = auth;
	o->host_len = host_end - auth;
	if (o->host_len == 0)
		return false;

	if (host_end < end && *host_end != ':')
		return false;
	if (host_end + 1 < end)
	{
		char	   *digits_end;

		errno = 0;
		o->port = strtol(host_end + 1, &digits_end, 10);
		if (errno != 0 || digits_end != end || o->port <= 0 || o->port > 65535)
			return false;
	}
	else if (o->scheme_len == 5 && pg_strncasecmp(url, "https", 5) == 0)
		o->port = 443;
	else if (o->scheme_len == 4 && pg_strncasecmp(url, "http", 4) == 0)
		o->port = 80;
	else
		return false;
	o->path = end;
	return true;
}

static bool
same_origin(const UrlOrigin *a, const UrlOrigin *b)
{
	return a->scheme_len == b->scheme_len &&
		pg_strncasecmp(a->scheme, b->scheme, a->scheme_len) == 0 &&
		a->host_len == b->host_len &&
		pg_strncasecmp(a->host, b->host, a->host_len) == 0 &&
		a->port == b->port;
}

/* "<project>/<repo>" of a path /v2/<project>/<repo>/manifests/<reference>. */
static char *
manifest_repository(const char *path)
{
	size_t		len = strcspn(path, "?#");
	const char *name = path + 4;
	const char *m = NULL;

	if (len < 4 || strncmp(path, "/v2/", 4) != 0)
		return NULL;
	for (const char *c = name; c + 11 < path + len; c++)
		if (strncmp(c, "/manifests/", 11) == 0)
			m = c;
	if (m == NULL || m == name)
		return NULL;
	return pnstrdup(name, m - name);
}

char *
harbor_token_headers(const char *manifest_url, const char *registry_url,
					 int lifetime_s, char **error)
{
	UrlOrigin	url;
	UrlOrigin	registry;
	char	   *repository;
	char	   *token;
	char	   *headers;
	size_t		len;

	*error = NULL;
	if (harbor_token_private_key_file == NULL || harbor_token_private_key_file[0] == '\0')
	{
		forget_key();			/* switched off: keep no private key in memory */
		return NULL;
	}
	/* the token opens Harbor's registry: never hand it to another host */
	if (!parse_origin(manifest_url, &url) || !parse_origin(registry_url, &registry) ||
		!same_origin(&url, &registry))
		return NULL;
	repository = manifest_repository(url.path);
	if (repository == NULL)
		return NULL;

	token = harbor_token_mint(repository, lifetime_s, error);
	pfree(repository);
	if (token == NULL)
		return NULL;
	/* sized exactly, so no partial copy is left behind in a freed buffer */
	len = strlen("{\"Authorization\":\"Bearer \"}") + strlen(token) + 1;
	headers = palloc(len);
	snprintf(headers, len, "{\"Authorization\":\"Bearer %s\"}", token);
	harbor_token_free(token);
	return headers;
}
