/*
 * harbor_auth.c
 *		Instance credentials from p2p_preheat_instance.auth_data, including
 *		Harbor's encrypted form, and the registry robot account.
 *
 * Harbor encrypts auth_data as "<enc-v1>" + base64(IV[16] || AES-CFB
 * ciphertext), keyed by the bytes of its secret key file.  The key file and
 * the robot account file are read by path (superuser-only settings), so no
 * secret ever passes through SQL text, pg_stat_activity or the server log.
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "common/base64.h"
#include "storage/fd.h"
#include "utils/builtins.h"

#include "compat.h"
#include "harbor_auth.h"
#include "json_soft.h"

#define ENC_PREFIX "<enc-v1>"
#define MAX_SECRET_FILE 4096

char	   *harbor_secret_key_file = NULL;
char	   *registry_credentials_file = NULL;

void
secret_free(char *s)
{
	if (s)
	{
		explicit_bzero(s, strlen(s));
		pfree(s);
	}
}

/*
 * Whole small file into palloc'd memory, or NULL with *why set to a reason
 * that names the setting, the file and what the system said.
 */
static char *
read_secret_file(const char *setting, const char *path, int *len, const char **why)
{
	FILE	   *f;
	char	   *buf;
	size_t		n;

	if (path == NULL || path[0] == '\0')
	{
		*why = psprintf("%s is not set", setting);
		return NULL;
	}
	f = AllocateFile(path, "rb");
	if (f == NULL)
	{
		*why = psprintf("could not open %s \"%s\": %s", setting, path, strerror(errno));
		return NULL;
	}
	buf = palloc(MAX_SECRET_FILE + 1);
	n = fread(buf, 1, MAX_SECRET_FILE + 1, f);
	if (ferror(f))
	{
		*why = psprintf("could not read %s \"%s\": %s", setting, path, strerror(errno));
		FreeFile(f);
		explicit_bzero(buf, MAX_SECRET_FILE + 1);	/* part of the secret may be in it */
		pfree(buf);
		return NULL;
	}
	FreeFile(f);
	if (n > MAX_SECRET_FILE)
	{
		explicit_bzero(buf, MAX_SECRET_FILE + 1);
		pfree(buf);
		*why = psprintf("%s \"%s\" is larger than %d bytes", setting, path, MAX_SECRET_FILE);
		return NULL;
	}
	buf[n] = '\0';
	*len = (int) n;
	return buf;
}

static char *
decrypt_enc_v1(const char *data, const char **error)
{
	const char *b64 = data + strlen(ENC_PREFIX);
	int			b64len = strlen(b64);
	int			keylen = 0;
	char	   *key;
	unsigned char *raw;
	int			rawlen;
	unsigned char *plain;
	int			outlen = 0,
				finlen = 0;
	const EVP_CIPHER *cipher;
	EVP_CIPHER_CTX *ctx;

	key = read_secret_file("p2p_preheat.secret_key_file", harbor_secret_key_file, &keylen, error);
	if (key == NULL)
	{
		*error = psprintf("auth_data is encrypted, and %s", *error);
		return NULL;
	}
	while (keylen > 0 && (key[keylen - 1] == '\n' || key[keylen - 1] == '\r'))
		key[--keylen] = '\0';
	cipher = keylen == 16 ? EVP_aes_128_cfb128() :
		keylen == 24 ? EVP_aes_192_cfb128() :
		keylen == 32 ? EVP_aes_256_cfb128() : NULL;
	if (cipher == NULL)
	{
		secret_free(key);
		*error = "Harbor's secret key must be 16, 24 or 32 bytes long";
		return NULL;
	}

	raw = palloc(pg_b64_dec_len(b64len) + 1);
	rawlen = pg_b64_decode(b64, b64len, (P2P_B64_BYTES *) raw, pg_b64_dec_len(b64len));
	if (rawlen <= 16)
	{
		secret_free(key);
		*error = "encrypted auth_data is not valid base64 of IV and ciphertext";
		return NULL;
	}
	plain = palloc(rawlen + EVP_MAX_BLOCK_LENGTH + 1);
	ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL ||
		EVP_DecryptInit_ex(ctx, cipher, NULL, (unsigned char *) key, raw) != 1 ||
		EVP_DecryptUpdate(ctx, plain, &outlen, raw + 16, rawlen - 16) != 1 ||
		EVP_DecryptFinal_ex(ctx, plain + outlen, &finlen) != 1)
	{
		EVP_CIPHER_CTX_free(ctx);
		secret_free(key);
		*error = "could not decrypt auth_data with Harbor's secret key";
		return NULL;
	}
	EVP_CIPHER_CTX_free(ctx);
	secret_free(key);
	explicit_bzero(raw, rawlen);
	plain[outlen + finlen] = '\0';
	return (char *) plain;
}

/* A string member of a JSON object, or NULL. */
static char *
string_member(JsonbValue *obj, const char *key)
{
	JsonbValue *v = jbv_get(obj, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static bool
header_safe(const char *s, bool is_name)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
	{
		if (*s == '\r' || *s == '\n' || (is_name && (*s == ':' || *s == ' ')))
			return false;
	}
	return true;
}

char *
instance_auth_header(const char *auth_mode, const char *auth_data,
					 const char **error)
{
	char	   *plain = NULL;
	JsonbValue *obj;
	JsonSoftError jerr;
	char	   *header = NULL;

	*error = NULL;
	if (auth_mode == NULL || auth_mode[0] == '\0' ||
		pg_strcasecmp(auth_mode, "NONE") == 0)
		return NULL;
	if (auth_data == NULL)
	{
		*error = "auth_data is empty";
		return NULL;
	}
	if (strncmp(auth_data, ENC_PREFIX, strlen(ENC_PREFIX)) == 0)
	{
		plain = decrypt_enc_v1(auth_data, error);
		if (plain == NULL)
			return NULL;
		auth_data = plain;
	}
	obj = json_parse_soft(auth_data, strlen(auth_data), 4, &jerr);
	if (obj == NULL || obj->type != jbvObject)
	{
		secret_free(plain);
		*error = "auth_data is not a JSON object";
		return NULL;
	}

	if (pg_strcasecmp(auth_mode, "BASIC") == 0)
	{
		char	   *user = string_member(obj, "username");
		char	   *pass = string_member(obj, "password");

		if (user && pass)
		{
			char	   *pair = psprintf("%s:%s", user, pass);
			int			plen = strlen(pair);
			int			elen = pg_b64_enc_len(plen);
			char	   *enc = palloc(elen + 1);
			int			n = pg_b64_encode((P2P_B64_BYTES *) pair, plen, enc, elen);

			enc[Max(n, 0)] = '\0';
			header = psprintf("Authorization: Basic %s", enc);
			secret_free(pair);
			secret_free(enc);
		}
		else
			*error = "BASIC auth_data needs \"username\" and \"password\"";
		secret_free(user);
		secret_free(pass);
	}
	else if (pg_strcasecmp(auth_mode, "OAUTH") == 0)
	{
		char	   *token = string_member(obj, "token");

		if (token && header_safe(token, false))
			header = psprintf("Authorization: Bearer %s", token);
		else
			*error = "OAUTH auth_data needs a \"token\"";
		secret_free(token);
	}
	else if (pg_strcasecmp(auth_mode, "CUSTOM") == 0)
	{
		if (obj->val.object.nPairs == 1 &&
			obj->val.object.pairs[0].value.type == jbvString)
		{
			char	   *name = pnstrdup(obj->val.object.pairs[0].key.val.string.val,
										obj->val.object.pairs[0].key.val.string.len);
			char	   *value = pnstrdup(obj->val.object.pairs[0].value.val.string.val,
										 obj->val.object.pairs[0].value.val.string.len);

			if (header_safe(name, true) && header_safe(value, false))
				header = psprintf("%s: %s", name, value);
			else
				*error = "CUSTOM auth_data holds a header name or value that is not allowed";
			pfree(name);
			secret_free(value);
		}
		else
			*error = "CUSTOM auth_data needs exactly one {\"Header-Name\": \"value\"} pair";
	}
	else
		*error = "auth_mode is not NONE, BASIC, OAUTH or CUSTOM";

	secret_free(plain);
	return header;
}

bool
registry_credentials(char **username, char **password, const char **error)
{
	int			len = 0;
	char	   *text;
	JsonbValue *obj;
	JsonSoftError jerr;

	*username = *password = NULL;
	*error = NULL;
	if (registry_credentials_file == NULL || registry_credentials_file[0] == '\0')
		return true;			/* none configured: Harbor's headers or anonymous */
	text = read_secret_file("p2p_preheat.registry_credentials_file", registry_credentials_file, &len, error);
	if (text == NULL)
		return false;
	obj = json_parse_soft(text, len, 4, &jerr);
	if (obj == NULL || obj->type != jbvObject ||
		(*username = string_member(obj, "username")) == NULL ||
		(*password = string_member(obj, "password")) == NULL)
	{
		secret_free(*username);
		*username = NULL;
		secret_free(text);
		*error = psprintf("p2p_preheat.registry_credentials_file \"%s\" must hold {\"username\": ..., \"password\": ...}",
						  registry_credentials_file);
		return false;
	}
	secret_free(text);
	return true;
}
